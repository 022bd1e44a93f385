#!/bin/sh
echo "$2 $3 returned $1" >> post.log
exit "$1"
