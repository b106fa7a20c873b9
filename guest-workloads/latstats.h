/*
 * Latency statistics for probe, in bounded memory: exact percentiles
 * (nearest rank) from a per-nanosecond count table below LAT_FINE_NS plus a
 * sorted list of the (rare) larger samples, and a log2 histogram in
 * microseconds.  No sample is ever dropped or approximated.
 */
#ifndef WL_LATSTATS_H
#define WL_LATSTATS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define LAT_BUCKETS 40           /* upper bounds 1 us .. 2^39 us */
#define LAT_FINE_NS (1u << 20)   /* exact counts below ~1 ms: 4 MiB of counters */

struct lat_acc {
    uint32_t *fine;   /* fine[ns] = number of samples of exactly ns, ns < LAT_FINE_NS */
    uint32_t *over;   /* samples >= LAT_FINE_NS */
    size_t nover, capover;
    uint64_t count;
    double sum_ns;
    uint32_t min_ns, max_ns;
    uint64_t histogram[LAT_BUCKETS]; /* bucket b: (2^(b-1), 2^b] us; bucket 0: [0, 1] us */
};

struct lat_stats {
    uint64_t count;
    double p50_us, p90_us, p99_us, p999_us, max_us, min_us, mean_us;
    uint64_t histogram[LAT_BUCKETS];
    int nbuckets; /* buckets up to the last non-empty one */
};

/* Histogram bucket of a latency in ns. */
int lat_bucket(uint32_t ns);
/* Rank (1-based) of the nearest-rank percentile: ceil(n * permille / 1000). */
uint64_t lat_rank(uint64_t n, unsigned permille);

void lat_init(struct lat_acc *a);   /* exits 1 when out of memory */
static inline void lat_add(struct lat_acc *a, uint32_t ns);
void lat_add_slow(struct lat_acc *a, uint32_t ns);
/* Exact statistics of everything added so far. */
void lat_compute(struct lat_acc *a, struct lat_stats *s);
void lat_free(struct lat_acc *a);
/* Adds count, p50_us ... mean_us and histogram [[upper_bound_us, count], ...] to j. */
void lat_json(struct wl_json *j, const struct lat_stats *s);

static inline void lat_add(struct lat_acc *a, uint32_t ns)
{
    a->count++;
    a->sum_ns += ns;
    if (ns < a->min_ns)
        a->min_ns = ns;
    if (ns > a->max_ns)
        a->max_ns = ns;
    a->histogram[lat_bucket(ns)]++;
    if (ns < LAT_FINE_NS)
        a->fine[ns]++;
    else
        lat_add_slow(a, ns);
}

#endif
