#!/bin/sh
echo "job A: $*"
date +%s.%N
