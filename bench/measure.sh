#!/bin/bash
# Measures one proxy: wrk (pinned to CPU 0, 32 keep-alive connections) for DURATION seconds,
# and the process PID's utime+stime over the run divided by requests served.
# usage: measure.sh NAME PORT PID DURATION
name=$1; port=$2; pid=$3; dur=${4:-8}
read u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
out=$(taskset -c 0 wrk -t1 -c32 -d${dur}s --latency http://127.0.0.1:$port/ 2>&1)
read u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
req=$(echo "$out" | awk '/requests in/ {print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
p50=$(echo "$out" | awk '$1=="50%" {print $2}')
p99=$(echo "$out" | awk '$1=="99%" {print $2}')
tck=$(getconf CLK_TCK)
cpu=$(python3 -c "print(round(((($u1-$u0)+($s1-$s0))/$tck)*1e6/$req,2))")
echo "$name rps=$rps p50=$p50 p99=$p99 cpu_us_per_req=$cpu user=$(( (u1-u0) )) sys=$(( (s1-s0) ))"
