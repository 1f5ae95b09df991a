/* The backend registry: the built-in tables and the ones a program registers, by name. */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MAX_BACKENDS 32

static const struct pj_backend *const builtin_backends[] = {
    &pj__backend_sequential,
    &pj__backend_threading,
    &pj__backend_fork,
    &pj__backend_spawn,
    &pj__backend_mpi,
};
#define N_BUILTIN (sizeof builtin_backends / sizeof builtin_backends[0])

const struct pj__backend_hooks *pj__backend_hooks(const struct pj_backend *backend)
{
    return backend == &pj__backend_mpi ? &pj__backend_mpi_hooks : NULL;
}

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct pj_backend *registered[MAX_BACKENDS];
static size_t n_registered;

static const struct pj_backend *find_locked(const char *name)
{
    for (size_t i = 0; i < N_BUILTIN; i++)
        if (strcmp(builtin_backends[i]->name, name) == 0)
            return builtin_backends[i];
    for (size_t i = 0; i < n_registered; i++)
        if (strcmp(registered[i]->name, name) == 0)
            return registered[i];
    return NULL;
}

const struct pj_backend *pj_backend_find(const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock(&registry_lock);
    const struct pj_backend *b = find_locked(name);
    pthread_mutex_unlock(&registry_lock);
    return b;
}

int pj_backend_register(const struct pj_backend *b)
{
    if (!b || b->version < 1 || !b->name || !*b->name || !b->open || !b->submit || !b->close)
        return pj__set_last_error(PJ_EINVAL, "pj_backend_register: %s",
                                  !b ? "backend is NULL" : b->version < 1 ? "version < 1"
                                  : !b->name || !*b->name ? "no name"
                                  : "open, submit and close are required");
    pthread_mutex_lock(&registry_lock);
    int rc = 0;
    if (find_locked(b->name))
        rc = PJ_EBUSY;
    else if (n_registered == MAX_BACKENDS)
        rc = PJ_ENOMEM;
    else
        registered[n_registered++] = b;
    pthread_mutex_unlock(&registry_lock);
    if (rc)
        return pj__set_last_error(rc, "pj_backend_register: %s", rc == PJ_EBUSY
                                  ? "a backend of that name is known already"
                                  : "the registry is full");
    return rc;
}

const struct pj_backend *pj_backend_at(size_t i)
{
    const struct pj_backend *b = NULL;
    pthread_mutex_lock(&registry_lock);
    if (i < N_BUILTIN)
        b = builtin_backends[i];
    else if (i - N_BUILTIN < n_registered)
        b = registered[i - N_BUILTIN];
    pthread_mutex_unlock(&registry_lock);
    return b;
}

void pj__known_backends(char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < N_BUILTIN + n_registered && used < len; i++) {
        const struct pj_backend *b = i < N_BUILTIN ? builtin_backends[i]
                                                    : registered[i - N_BUILTIN];
        used += (size_t)snprintf(buf + used, len - used, "%s\"%s\"", i ? ", " : "", b->name);
    }
    pthread_mutex_unlock(&registry_lock);
}
