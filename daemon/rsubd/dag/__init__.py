"""Remote DAGs: reading a .dag, finding its files, the flat spool, the DAGMan job."""
