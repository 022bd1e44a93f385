#!/bin/sh
echo "job C: $(cat "$CONDOR_DIR_INPUT/data.txt") $(cat "$INPUT_TAR_DIR_LOCAL/lib.txt")"
date +%s.%N
