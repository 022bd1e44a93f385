#!/bin/sh
# Reads its input file, writes a result file, and says something on stdout and stderr.
name="$1"
echo "hello from job '$name' on $(hostname)"
echo "job '$name' writes its diagnostics here" >&2
{
    echo "result for $name"
    tr 'a-z' 'A-Z' < "input_$name.txt"
} > "result_$name.txt"
