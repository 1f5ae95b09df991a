/* n_jobs == 1: batches run in the submitting thread, the serial path every test and benchmark
 * compares against (pthreadpool's NULL pool).  A timeout cannot interrupt a task here; it is
 * reported when the task returns late. */
#include "internal.h"

static int sequential_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                           size_t errlen);
static int sequential_submit(void *state, pj_batch *batch);
static void sequential_close(void *state);

const struct pj_backend pj__backend_sequential = {
    .version = PJ_BACKEND_VERSION,
    .name = "sequential",
    .display_name = "SequentialBackend",
    .features = PJ_BACKEND_INLINE | PJ_BACKEND_BATCH_RUN,
    .open = sequential_open,
    .submit = sequential_submit,
    .stop_task = NULL,
    .close = sequential_close,
};

static int sequential_open(void **state, int n_workers, const pj_config *config, char *errbuf,
                           size_t errlen)
{
    (void)n_workers, (void)config, (void)errbuf, (void)errlen;
    *state = NULL;
    return 0;
}

static int sequential_submit(void *state, pj_batch *batch)
{
    (void)state;
    pj_batch_run(batch); /* nothing can claim a task here, so it always hands the batch back */
    pj_batch_done(batch);
    return 0;
}

static void sequential_close(void *state)
{
    (void)state;
}
