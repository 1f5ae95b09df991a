/* Function descriptions (pj_fn): a signature checked and laid out for libffi by pj_fn_new, and
 * the direct-call path that calls it (pj__invoke).  Tasks and argument capture are in task.c;
 * what the two share, in task.h. */
#include "task.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A complex member anywhere inside a struct, as the path of member numbers ("2.1") into path;
 * false when there is none (or the elements list is malformed: libffi says so later).  Members
 * are not checked beyond this depth, which no real struct reaches. */
static bool complex_member(const ffi_type *t, char *path, size_t len, int depth)
{
    if (t->type != FFI_TYPE_STRUCT || !t->elements || depth > 64)
        return false;
    for (unsigned k = 0; t->elements[k]; k++) {
        const ffi_type *e = t->elements[k];
        int used = snprintf(path, len, "%s%u", depth ? "." : "", k);
        size_t at = used > 0 && (size_t)used < len ? (size_t)used : len - 1;
        if (e->type == FFI_TYPE_COMPLEX || complex_member(e, path + at, len - at, depth + 1))
            return true;
    }
    return false;
}

static int check_type(const ffi_type *t, bool is_return, const char *name, unsigned i)
{
    const char *what = is_return ? "return" : "argument";
    if (!t)
        return pj__set_last_error(PJ_EINVAL, "%s: type of %s %u is NULL", name, what, i);
    if (t->type == FFI_TYPE_COMPLEX)
        return pj__set_last_error(PJ_ETYPE, "%s: complex types are not supported", name);
    char path[128];
    /* A worker process could not decode it either: refused here, not as a wire error later. */
    if (is_return && complex_member(t, path, sizeof path, 0))
        return pj__set_last_error(PJ_ETYPE, "%s: the returned struct has a complex member "
                                  "(member %s); complex types are not supported", name, path);
    if (!is_return && complex_member(t, path, sizeof path, 0))
        return pj__set_last_error(PJ_ETYPE, "%s: the struct of argument %u has a complex member "
                                  "(member %s); complex types are not supported", name, i, path);
    if (t->type == FFI_TYPE_VOID && !is_return)
        return pj__set_last_error(PJ_ETYPE, "%s: argument %u is void", name, i);
    if (t->type > FFI_TYPE_LAST)
        return pj__set_last_error(PJ_ETYPE, "%s: argument %u has an unknown ffi type %u", name,
                                  i, t->type);
    return 0;
}

/* ---- the direct-call path -------------------------------------------------------------------
 * ffi_call costs ~25 ns for int add(int, int), ten times the call itself, and tiny tasks are
 * all call.  On x86-64 System V and AArch64, integer-class and floating arguments travel in two
 * independent register files (6/8 integer, 8 vector), so any function taking at most 6 integer
 * or pointer arguments and 8 float/double arguments, returning void, an integer, a pointer, a
 * float or a double, receives exactly the right registers when called as
 *     ret f(u64 x 6, double x 8)
 * with its arguments placed in order within each file: the callee reads the registers it
 * declares and ignores the rest.  This is what libffi's own trampolines do, minus the generic
 * classification per call.  Everything else (structs, long double, more arguments, other
 * platforms, or PARJOB_NO_DIRECT_CALL=1) goes through ffi_call. */
enum { PJ__CALL_FFI, PJ__CALL_INT, PJ__CALL_DOUBLE, PJ__CALL_FLOAT };
enum { LOAD_S8, LOAD_U8, LOAD_S16, LOAD_U16, LOAD_S32, LOAD_U32, LOAD_64, LOAD_F32, LOAD_F64 };

#if (defined(__x86_64__) && !defined(_WIN32)) || defined(__aarch64__)
#define DIRECT_CALLS 1
#define INT_REGS 6
#define FP_REGS 8
#else
#define DIRECT_CALLS 0
#endif

typedef uint64_t (*int_call)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, double,
                             double, double, double, double, double, double, double);
typedef double (*fp_call)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, double,
                          double, double, double, double, double, double, double);

static int load_kind(unsigned short type)
{
    switch (type) {
    case FFI_TYPE_SINT8: return LOAD_S8;
    case FFI_TYPE_UINT8: return LOAD_U8;
    case FFI_TYPE_SINT16: return LOAD_S16;
    case FFI_TYPE_UINT16: return LOAD_U16;
    case FFI_TYPE_INT:
    case FFI_TYPE_SINT32: return LOAD_S32;
    case FFI_TYPE_UINT32: return LOAD_U32;
    case FFI_TYPE_SINT64:
    case FFI_TYPE_UINT64:
    case FFI_TYPE_POINTER: return LOAD_64;
    case FFI_TYPE_FLOAT: return LOAD_F32;
    case FFI_TYPE_DOUBLE: return LOAD_F64;
    default: return -1;
    }
}

static int direct_call_class(const ffi_type *rtype)
{
    switch (rtype->type) {
    case FFI_TYPE_FLOAT: return PJ__CALL_FLOAT;
    case FFI_TYPE_DOUBLE: return PJ__CALL_DOUBLE;
    case FFI_TYPE_VOID: return PJ__CALL_INT;
    default: return is_integral(rtype->type) || rtype->type == FFI_TYPE_POINTER
                        ? PJ__CALL_INT : PJ__CALL_FFI;
    }
}

/* Fills fn->call and fn->ops; leaves PJ__CALL_FFI when the signature does not qualify. */
static void plan_direct_call(pj_fn *fn)
{
    fn->call = PJ__CALL_FFI;
#if DIRECT_CALLS
    const char *off = getenv("PARJOB_NO_DIRECT_CALL");
    if ((off && *off && strcmp(off, "0") != 0) || fn->cif.abi != FFI_DEFAULT_ABI)
        return;
    int call = direct_call_class(fn->rtype);
    unsigned ints = 0, fps = 0;
    if (call == PJ__CALL_FFI)
        return;
    for (unsigned i = 0; i < fn->nargs; i++) {
        int load = load_kind(fn->atypes[i]->type);
        if (load < 0)
            return;
        unsigned *used = load >= LOAD_F32 ? &fps : &ints;
        if (*used == (load >= LOAD_F32 ? FP_REGS : INT_REGS))
            return;
        fn->ops[i] = (struct pj__argop){ (uint32_t)fn->offsets[i], (uint8_t)load,
                                         (uint8_t)(*used)++ };
    }
    fn->call = (uint8_t)call;
#endif
}

static void direct_call(const pj_fn *fn, const unsigned char *args, void *ret)
{
    uint64_t r[6] = { 0 };
    union { double d; float f; uint64_t bits; } v[8] = { { 0 } };
    for (unsigned i = 0; i < fn->nargs; i++) {
        const struct pj__argop *op = &fn->ops[i];
        const unsigned char *p = args + op->offset;
        switch (op->load) {
        case LOAD_S8: r[op->slot] = (uint64_t)(int64_t)*(const int8_t *)p; break;
        case LOAD_U8: r[op->slot] = *(const uint8_t *)p; break;
        case LOAD_S16: r[op->slot] = (uint64_t)(int64_t)*(const int16_t *)p; break;
        case LOAD_U16: r[op->slot] = *(const uint16_t *)p; break;
        case LOAD_S32: r[op->slot] = (uint64_t)(int64_t)*(const int32_t *)p; break;
        case LOAD_U32: r[op->slot] = *(const uint32_t *)p; break;
        case LOAD_64: memcpy(&r[op->slot], p, 8); break;
        case LOAD_F32: memcpy(&v[op->slot].f, p, 4); break;
        default: memcpy(&v[op->slot].d, p, 8); break;
        }
    }
    if (fn->call == PJ__CALL_INT) {
        uint64_t x = ((int_call)(void *)fn->ptr)(r[0], r[1], r[2], r[3], r[4], r[5], v[0].d,
                                                 v[1].d, v[2].d, v[3].d, v[4].d, v[5].d,
                                                 v[6].d, v[7].d);
        if (fn->ret_size == 8) /* every integer return: an ffi_arg (return_slot_size) */
            memcpy(ret, &x, 8);
        else if (fn->ret_size)
            memcpy(ret, &x, fn->ret_size < 8 ? fn->ret_size : 8);
        return;
    }
    union { double d; float f; } x;
    x.d = ((fp_call)(void *)fn->ptr)(r[0], r[1], r[2], r[3], r[4], r[5], v[0].d, v[1].d, v[2].d,
                                     v[3].d, v[4].d, v[5].d, v[6].d, v[7].d);
    if (fn->call == PJ__CALL_FLOAT)
        memcpy(ret, &x.f, sizeof x.f); /* a float comes back in the low half of the register */
    else
        memcpy(ret, &x.d, sizeof x.d);
}

void pj__invoke(const pj_fn *fn, const unsigned char *args, void *ret)
{
    if (fn->call != PJ__CALL_FFI) {
        direct_call(fn, args, ret);
        return;
    }
    void *argv[fn->nargs ? fn->nargs : 1];
    for (unsigned i = 0; i < fn->nargs; i++)
        argv[i] = (void *)(args + fn->offsets[i]);
    ffi_call((ffi_cif *)&fn->cif, fn->ptr, ret, argv);
}

/* A pointer member of struct type t, anywhere inside it, as the path of member numbers ("2.1")
 * into path (when not NULL).  With value NULL any pointer member counts; with the struct's
 * bytes, only one that is not NULL (a NULL pointer means the same in every process). */
bool pj__pointer_member(const ffi_type *t, const unsigned char *value, char *path, size_t len,
                        int depth)
{
    if (t->type != FFI_TYPE_STRUCT || !t->elements || depth > 64)
        return false;
    size_t off = 0;
    for (unsigned k = 0; t->elements[k]; k++) {
        const ffi_type *e = t->elements[k];
        off = align_up(off, e->alignment ? e->alignment : 1);
        size_t at = 0;
        if (path) {
            int used = snprintf(path, len, "%s%u", depth ? "." : "", k);
            at = used > 0 && (size_t)used < len ? (size_t)used : len - 1;
        }
        if (e->type == FFI_TYPE_POINTER &&
            (!value || *(void *const *)(const void *)(value + off) != NULL))
            return true;
        if (pj__pointer_member(e, value ? value + off : NULL, path ? path + at : NULL, len - at,
                               depth + 1))
            return true;
        off += e->size;
    }
    return false;
}

static size_t return_slot_size(const ffi_type *rtype)
{
    if (rtype->type == FFI_TYPE_VOID)
        return 0;
    if (is_integral(rtype->type) && rtype->size < sizeof(ffi_arg))
        return sizeof(ffi_arg);
    return rtype->size;
}

/* Markers, never handed to libffi: pj_fn_new calls such functions with ffi_type_pointer. */
ffi_type pj_type_str_owned = { sizeof(char *), _Alignof(char *), FFI_TYPE_POINTER, NULL };
ffi_type pj_type_str_borrowed = { sizeof(char *), _Alignof(char *), FFI_TYPE_POINTER, NULL };

pj_fn *pj_fn_new(const char *name, void (*fnptr)(void), ffi_type *rtype, unsigned nargs,
                 ffi_type *const *atypes)
{
    const char *label = name ? name : "function";
    if (!fnptr)
        return pj__set_last_error(PJ_EINVAL, "%s: function pointer is NULL", label), NULL;
    if (nargs > PJ__MAX_ARGS)
        return pj__set_last_error(PJ_EINVAL, "%s: %u arguments, at most %d", label, nargs,
                                  PJ__MAX_ARGS), NULL;
    if (nargs > 0 && !atypes)
        return pj__set_last_error(PJ_EINVAL, "%s: argument types are NULL", label), NULL;
    if (check_type(rtype, true, label, 0))
        return NULL;
    for (unsigned i = 0; i < nargs; i++)
        if (check_type(atypes[i], false, label, i))
            return NULL;

    pj_fn *fn = calloc(1, sizeof *fn);
    if (!fn)
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    /* A C-string return is called as the char * it is; the result keeps a string of its own. */
    fn->ret_str = rtype == &pj_type_str_owned ? PJ__STR_OWNED
                  : rtype == &pj_type_str_borrowed ? PJ__STR_BORROWED : 0;
    if (fn->ret_str)
        rtype = &ffi_type_pointer;
    fn->ptr = fnptr;
    fn->rtype = rtype;
    fn->nargs = nargs;
    fn->name = name ? strdup(name) : NULL;
    fn->atypes = calloc(nargs ? nargs : 1, sizeof *fn->atypes);
    fn->offsets = calloc(nargs ? nargs : 1, sizeof *fn->offsets);
    fn->ops = calloc(nargs ? nargs : 1, sizeof *fn->ops);
    if ((name && !fn->name) || !fn->atypes || !fn->offsets || !fn->ops) {
        pj_fn_free(fn);
        return pj__set_last_error(PJ_ENOMEM, "out of memory"), NULL;
    }
    if (nargs)
        memcpy(fn->atypes, atypes, nargs * sizeof *atypes);
    if (ffi_prep_cif(&fn->cif, FFI_DEFAULT_ABI, nargs, rtype, fn->atypes) != FFI_OK) {
        pj_fn_free(fn);
        return pj__set_last_error(PJ_ETYPE, "%s: libffi rejects this signature", label), NULL;
    }
    /* ffi_prep_cif has laid out any struct types: sizes and alignments are known now. */
    size_t off = 0;
    for (unsigned i = 0; i < nargs; i++) {
        size_t a = fn->atypes[i]->alignment ? fn->atypes[i]->alignment : 1;
        off = align_up(off, a);
        fn->offsets[i] = off;
        off += fn->atypes[i]->size;
        fn->struct_args |= fn->atypes[i]->type == FFI_TYPE_STRUCT;
        fn->pointer_args |= fn->atypes[i]->type == FFI_TYPE_POINTER ||
                            pj__pointer_member(fn->atypes[i], NULL, NULL, 0, 0);
    }
    fn->args_size = align_up(off, 16);
    fn->ret_size = return_slot_size(rtype);
    plan_direct_call(fn);
    return fn;
}

pj_fn *pj_fn_new_list(const char *name, void (*fnptr)(void), unsigned ntypes,
                      ffi_type *const *types)
{
    if (ntypes == 0 || !types)
        return pj__set_last_error(PJ_EINVAL, "%s: no return type given", name ? name : "?"),
               NULL;
    return pj_fn_new(name, fnptr, types[0], ntypes - 1, types + 1);
}

void pj_fn_free(pj_fn *fn)
{
    if (!fn)
        return;
    free(fn->atypes);
    free(fn->offsets);
    free(fn->ops);
    free(fn->name);
    free(fn);
}

unsigned pj_fn_nargs(const pj_fn *fn)
{
    return fn ? fn->nargs : 0;
}

const char *pj_fn_name(const pj_fn *fn)
{
    return fn && fn->name ? fn->name : "";
}
