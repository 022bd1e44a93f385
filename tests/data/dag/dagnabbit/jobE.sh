#!/bin/sh
echo "job E: $*"
date +%s.%N
