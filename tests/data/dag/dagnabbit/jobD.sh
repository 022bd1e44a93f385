#!/bin/sh
echo "job D: $*"
date +%s.%N
