# bench/plot.gp — throughput relative to serial vs task duration, one line per peer/backend.
# Called by scripts/bench:
#   gnuplot -e "datadir='DIR'; peers='a b c'; out='bench/sweep.png'" bench/plot.gp
# DIR/<peer>.dat holds "task_us median min max" rows, written by bench/peers/report.py.
if (!exists("datadir")) datadir = 'build-bench/plot'
if (!exists("out")) out = 'bench/sweep.png'
if (!exists("peers")) peers = ''

set terminal pngcairo size 1100,700 font ",10" noenhanced
set output out
set title "Throughput relative to the serial loop vs task duration (median, min-max bars)\nC peers vs a serial loop of direct calls; Python peers vs a serial Python+ctypes loop"
set xlabel "task duration (us)"
set ylabel "throughput / serial throughput"
set logscale x
set logscale y
set xrange [0.03:20000]
set yrange [0.005:4]
set xtics ("50 ns" 0.05, "1 us" 1, "10 us" 10, "100 us" 100, "1 ms" 1000, "10 ms" 10000)
set ytics ("0.01" 0.01, "0.1" 0.1, "0.5" 0.5, "1" 1, "2" 2, "4" 4)
set grid xtics ytics
set key outside right top
set pointsize 1
# Sixteen distinct colours before any repeats; Python peers are drawn dashed, parjob thicker.
array colours[16] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", \
                     "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aa0000", \
                     "#0000cc", "#008800", "#cc6600", "#660066"]
do for [i=1:16] { set linetype i lc rgb colours[i] pt i }
ispy(p) = (p[1:3] eq "py_" || p[1:7] eq "joblib_") ? 2 : 1
lw(p) = p[1:7] eq "parjob_" ? 3.5 : 1.5

plot for [p in peers] datadir.'/'.p.'.dat' using 1:2:3:4 with yerrorlines lw lw(p) dt ispy(p) title p, \
     1 with lines dt 2 lc rgb "black" title "serial"
