/* pthread_pool.c — peer: the thread pool a C programmer writes by hand. One mutex and two
 * condition variables around a FIFO of malloc'd task structs, N worker threads (usable CPUs; the
 * seed workload gets its own pool of 10). Each task is either a direct call through a small
 * per-function thunk or a generic call through ffi_call with its arguments captured by value in
 * the task struct — the latter is the shape of a generic "run any function later" pool.
 *
 *   pthread_pool [PJBENCH_RUNS=5] [PJBENCH_ONLY=tiny,cpu5ms,cpu50us,sweep,seed,startup] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

struct task {
	struct task *next;
	void (*run)(struct task *t);
	long i;           /* index of the result slot */
	ffi_cif *cif;     /* ffi variant: signature, function, captured arguments */
	void (*fn)(void);
	void *av[2];
	union {
		int i[2];
		double d;
	} arg;
};

struct pool {
	pthread_mutex_t lock;
	pthread_cond_t work;  /* signalled when a task is queued or stop is set */
	pthread_cond_t done;  /* signalled when pending drops to 0 */
	struct task *head, *tail;
	long pending;         /* queued + running tasks */
	int stop;
	int nthreads;
	pthread_t *threads;
};

/* Lock rule: `lock` guards head, tail, pending and stop; a worker never holds it while running a
 * task, and it accounts for the task it just ran in the same critical section in which it takes
 * the next one — one lock round trip per task. */
static void *worker(void *arg)
{
	struct pool *p = arg;
	struct task *done = NULL;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		if (done != NULL && --p->pending == 0)
			pthread_cond_signal(&p->done);
		done = NULL;
		while (p->head == NULL && !p->stop)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->head == NULL)
			break;
		struct task *t = p->head;
		p->head = t->next;
		if (p->head == NULL)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		t->run(t);
		free(t);
		done = t; /* only compared with NULL from here on */
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static struct pool *pool_new(int n)
{
	struct pool *p = calloc(1, sizeof *p);
	if (p == NULL || (p->threads = calloc((size_t)n, sizeof *p->threads)) == NULL)
		exit(1);
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	p->nthreads = n;
	for (int k = 0; k < n; k++)
		if (pthread_create(&p->threads[k], NULL, worker, p) != 0)
			exit(1);
	return p;
}

static void pool_free(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (int k = 0; k < p->nthreads; k++)
		pthread_join(p->threads[k], NULL);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

static void pool_submit(struct pool *p, struct task *t)
{
	t->next = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->tail != NULL)
		p->tail->next = t;
	else
		p->head = t;
	p->tail = t;
	p->pending++;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
}

static void pool_wait(struct pool *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->pending > 0)
		pthread_cond_wait(&p->done, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

/* Direct thunks: one per function, as a hand-written pool needs. */
static void run_add(struct task *t)
{
	pjb_iout[t->i] = add(t->arg.i[0], t->arg.i[1]);
}

static void run_spin(struct task *t)
{
	pjb_dout[t->i] = spin_us(t->arg.d);
}

static void run_sleep(struct task *t)
{
	pjb_dout[t->i] = sleep_s(t->arg.d);
}

/* Generic: any signature, through libffi. Integral returns come back as a full ffi_arg. */
static void run_ffi(struct task *t)
{
	union {
		ffi_arg a;
		double d;
	} r;
	ffi_call(t->cif, t->fn, &r, t->av);
	if (t->cif->rtype == &ffi_type_sint)
		pjb_iout[t->i] = (int)r.a;
	else
		pjb_dout[t->i] = r.d;
}

struct pool_cfg {
	struct pool *pool;     /* default-size pool */
	struct pool *pool_big; /* for workloads asking for more workers (seed) */
	int ffi;
};

static struct task *make_task(const struct pjb_workload *w, long i, int ffi)
{
	struct task *t = malloc(sizeof *t);
	if (t == NULL)
		exit(1);
	t->i = i;
	if (w->kind == PJB_ADD) {
		t->arg.i[0] = (int)i;
		t->arg.i[1] = 1;
		t->av[0] = &t->arg.i[0];
		t->av[1] = &t->arg.i[1];
	} else {
		t->arg.d = w->arg;
		t->av[0] = &t->arg.d;
	}
	if (ffi) {
		t->run = run_ffi;
		t->cif = w->kind == PJB_ADD ? &pjb_cif_add : &pjb_cif_d_d;
		t->fn = w->kind == PJB_ADD    ? FFI_FN(add)
			: w->kind == PJB_SPIN ? FFI_FN(spin_us)
					      : FFI_FN(sleep_s);
	} else {
		t->run = w->kind == PJB_ADD ? run_add : w->kind == PJB_SPIN ? run_spin : run_sleep;
	}
	return t;
}

static double run_pool(const struct pjb_workload *w, void *ctx)
{
	const struct pool_cfg *c = ctx;
	struct pool *p = w->workers > 0 ? c->pool_big : c->pool;
	double t0 = pjb_now();
	for (long i = 0; i < w->n; i++)
		pool_submit(p, make_task(w, i, c->ffi));
	pool_wait(p);
	return pjb_now() - t0;
}

/* Start-up: a fresh pool until the first result is back (thread creation dominates). */
static void bench_startup(int nthreads)
{
	const struct pjb_workload w = { "startup", PJB_ADD, 1, 0, 0, 0 };
	int runs = pjb_runs();
	double *t = calloc((size_t)runs, sizeof *t);
	for (int r = -1; r < runs; r++) {
		double t0 = pjb_now();
		struct pool *p = pool_new(nthreads);
		pool_submit(p, make_task(&w, 0, 1));
		pool_wait(p);
		double e = pjb_now() - t0;
		pool_free(p);
		if (r >= 0)
			t[r] = e;
	}
	pjb_print("pool_mutex_ffi", "pthread_pool", &w, "startup_s", t, runs, nthreads, "");
	free(t);
}

int main(void)
{
	size_t nw;
	const struct pjb_workload *w = pjb_init(&nw);
	int ncpu = pjb_cpus();
	struct pool *p = pool_new(ncpu), *big = NULL;
	for (size_t k = 0; k < nw; k++)
		if (w[k].workers > 0 && pjb_enabled(w[k].name) && big == NULL)
			big = pool_new(w[k].workers);
	struct pool_cfg direct = { p, big, 0 }, ffi = { p, big, 1 };
	const struct pjb_variant v[] = {
		{ "c_serial_direct", pjb_serial_direct, NULL },
		{ "c_serial_ffi", pjb_serial_ffi, NULL },
		{ "pool_mutex_direct", run_pool, &direct },
		{ "pool_mutex_ffi", run_pool, &ffi },
	};
	const int nv = sizeof v / sizeof v[0];
	printf("# pthread_pool: threads=%d iters_per_us=%.2f\n", ncpu, pjwork_iters_per_us());
	for (size_t k = 0; k < nw; k++) {
		if (!pjb_enabled(w[k].name))
			continue;
		int workers = pjb_workers(&w[k], ncpu);
		if (w[k].wall)
			pjb_bench("pthread_pool", &w[k], v + 2, nv - 2, -1, workers);
		else
			pjb_bench("pthread_pool", &w[k], v, nv, 0, workers);
	}
	if (pjb_enabled("startup"))
		bench_startup(ncpu);
	pool_free(p);
	if (big != NULL)
		pool_free(big);
	return 0;
}
