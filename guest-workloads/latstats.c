#include "latstats.h"

#include <stdlib.h>

int lat_bucket(uint32_t ns)
{
    /* smallest b with ns <= 1000 * 2^b, i.e. ceil(log2(ceil(ns / 1000))) */
    uint64_t q = ((uint64_t)ns + 999) / 1000;
    int b = q <= 1 ? 0 : 64 - __builtin_clzll(q - 1);
    return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

uint64_t lat_rank(uint64_t n, unsigned permille)
{
    /* nearest rank: the smallest value with at least permille/1000 of the
     * samples <= it, in integers (no floating-point rounding) */
    uint64_t rank = (n * permille + 999) / 1000;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return rank;
}

void lat_init(struct lat_acc *a)
{
    *a = (struct lat_acc){0};
    a->min_ns = UINT32_MAX;
    a->fine = calloc(LAT_FINE_NS, sizeof(*a->fine));
    if (!a->fine)
        wl_die(1, "cannot allocate the latency table");
}

void lat_add_slow(struct lat_acc *a, uint32_t ns)
{
    if (a->nover == a->capover) {
        a->capover = a->capover ? a->capover * 2 : 1024;
        a->over = realloc(a->over, a->capover * sizeof(*a->over));
        if (!a->over)
            wl_die(1, "out of memory");
    }
    a->over[a->nover++] = ns;
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

void lat_compute(struct lat_acc *a, struct lat_stats *s)
{
    static const unsigned permille[4] = {500, 900, 990, 999};
    double *out[4] = {&s->p50_us, &s->p90_us, &s->p99_us, &s->p999_us};
    uint64_t rank[4], seen = 0;
    size_t ns = 0, k = 0, i;
    int b;

    *s = (struct lat_stats){0};
    s->count = a->count;
    if (a->count == 0)
        return;
    for (i = 0; i < 4; i++)
        rank[i] = lat_rank(a->count, permille[i]);
    qsort(a->over, a->nover, sizeof(*a->over), cmp_u32);
    /* walk the values in increasing order: fine table, then the sorted overflow */
    for (ns = 0; ns < LAT_FINE_NS && k < 4; ns++) {
        seen += a->fine[ns];
        while (k < 4 && seen >= rank[k])
            *out[k++] = (double)ns / 1e3;
    }
    for (i = 0; i < a->nover && k < 4; i++) {
        seen++;
        while (k < 4 && seen >= rank[k])
            *out[k++] = (double)a->over[i] / 1e3;
    }
    s->min_us = a->min_ns / 1e3;
    s->max_us = a->max_ns / 1e3;
    s->mean_us = a->sum_ns / (double)a->count / 1e3;
    for (b = 0; b < LAT_BUCKETS; b++) {
        s->histogram[b] = a->histogram[b];
        if (a->histogram[b])
            s->nbuckets = b + 1;
    }
}

void lat_free(struct lat_acc *a)
{
    free(a->fine);
    free(a->over);
    *a = (struct lat_acc){0};
}

void lat_json(struct wl_json *j, const struct lat_stats *s)
{
    int b;
    wl_json_u64(j, "count", s->count);
    wl_json_double(j, "p50_us", s->p50_us);
    wl_json_double(j, "p90_us", s->p90_us);
    wl_json_double(j, "p99_us", s->p99_us);
    wl_json_double(j, "p999_us", s->p999_us);
    wl_json_double(j, "max_us", s->max_us);
    wl_json_double(j, "min_us", s->min_us);
    wl_json_double(j, "mean_us", s->mean_us);
    wl_json_begin(j, "histogram", '[');
    for (b = 0; b < s->nbuckets; b++) {
        wl_json_begin(j, NULL, '[');
        wl_json_u64(j, NULL, 1ULL << b);
        wl_json_u64(j, NULL, s->histogram[b]);
        wl_json_end(j, ']');
    }
    wl_json_end(j, ']');
}
