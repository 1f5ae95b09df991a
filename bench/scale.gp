# bench/scale.gp — worker pools against n_jobs (issue 18): the time from pj_parallel_new to the
# first result of a run of n_jobs 100 ms sleeps, pj_parallel_free's, and the run's CPU time per
# worker (flat: linear in n_jobs), per backend, beside ProcessPoolExecutor(max_workers=n_jobs)
# in the same run.  Called by scripts/bench:
#   gnuplot -e "datadir='DIR'; out='bench/scale.png'" bench/scale.gp
# DIR/<peer>_<metric>.dat holds "n_jobs median min max" rows (scripts/bench writes them from
# scale_bench's lines in bench/results.txt).
if (!exists("datadir")) datadir = 'build-bench/scale'
if (!exists("out")) out = 'bench/scale.png'
peers = "parjob_threading parjob_fork parjob_spawn py_processpool"

set terminal pngcairo size 1650,560 font ",10" noenhanced
set output out
set multiplot layout 1,3 \
    title "Worker pools against n_jobs: median of the runs, min-max bars (2 cores)"
set logscale xy 2
set xrange [48:2800]
set xtics (64, 128, 256, 512, 1024, 2048)
set grid xtics ytics
set key top left
set xlabel "n_jobs (one 100 ms sleep per worker)"
do for [i=1:4] { set linetype i lw 2 pt 7 ps 0.8 }

set title "pj_parallel_new to the first result (s); the task itself is 0.1 s"
set ylabel "seconds"
set logscale y 10
plot for [p in peers] datadir.'/'.p.'_first_s.dat' using 1:2:3:4 with yerrorlines title p, \
     0.5 with lines dt 2 lc rgb "black" title "target at 2048: 0.5 s"

set title "pj_parallel_free / executor shutdown (s)"
plot for [p in peers] datadir.'/'.p.'_free_s.dat' using 1:2:3:4 with yerrorlines title p, \
     0.2 with lines dt 2 lc rgb "black" title "target at 2048: 0.2 s"

set title "CPU time of the whole run per worker (us), this process and its children"
set key bottom right
set ylabel "microseconds per worker"
plot for [p in peers] datadir.'/'.p.'_cpu_us_per_worker.dat' using 1:2:3:4 with yerrorlines \
     title p
unset multiplot
