#!/bin/sh
echo "job B: $*"
date +%s.%N
