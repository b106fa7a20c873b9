#include "seqpage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rd64(const unsigned char *p, unsigned off)
{
    uint64_t v;
    memcpy(&v, p + off, sizeof(v));
    return v;
}

void seq_page_init(void *p, uint64_t index, uint64_t v)
{
    unsigned char *b = p;
    uint64_t magic = SEQ_MAGIC;
    memset(b, 0, SEQ_PAGE);
    memcpy(b + SEQ_OFF_COUNTER, &v, 8);
    memcpy(b + SEQ_OFF_MAGIC, &magic, 8);
    memcpy(b + SEQ_OFF_INDEX, &index, 8);
    memcpy(b + SEQ_OFF_TRAILER, &v, 8);
}

void seq_page_increment(void *p)
{
    uint64_t *header = (uint64_t *)p;
    uint64_t *trailer = (uint64_t *)((unsigned char *)p + SEQ_OFF_TRAILER);
    uint64_t v = __atomic_load_n(header, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(header, v, __ATOMIC_RELAXED);
    /* release: the header store is visible before the trailer store */
    __atomic_store_n(trailer, v, __ATOMIC_RELEASE);
}

/* Per-page classification. */
enum { K_CONSISTENT, K_TORN, K_BROKEN };

static int is_zero(const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Most frequent value of a[0..n) (sorts a). */
static uint64_t mode_of(uint64_t *a, size_t n)
{
    size_t i, run = 0, best_run = 0;
    uint64_t best = a[0];
    qsort(a, n, sizeof(*a), cmp_u64);
    for (i = 0; i < n; i++) {
        run = (i > 0 && a[i] == a[i - 1]) ? run + 1 : 1;
        if (run > best_run) {
            best_run = run;
            best = a[i];
        }
    }
    return best;
}

/*
 * Best step position K for base value v: minimises the number of pages that
 * do not fit "[0,K) = v+1, [K,N) = v, page K possibly torn (v+1|v)".
 */
static uint64_t best_step(const uint8_t *kind, const uint64_t *h, uint64_t n, uint64_t v,
                          uint64_t *cost_out)
{
    uint64_t lo_after = 0, hi_prefix = 0, best_cost = UINT64_MAX, best_k = 0, k;
    for (k = 0; k < n; k++)
        lo_after += kind[k] == K_CONSISTENT && h[k] == v;
    for (k = 0; k <= n; k++) {
        uint64_t cost;
        if (k < n) {
            int lo_good = kind[k] == K_CONSISTENT && h[k] == v;
            int k_ok = lo_good || (kind[k] == K_TORN && h[k] == v + 1);
            uint64_t lo_after_excl = lo_after - (uint64_t)lo_good;
            cost = (k - hi_prefix) + (n - k - 1 - lo_after_excl) + (uint64_t)!k_ok;
            hi_prefix += kind[k] == K_CONSISTENT && h[k] == v + 1;
            lo_after = lo_after_excl;
        } else {
            cost = n - hi_prefix;
        }
        if (cost < best_cost) {
            best_cost = cost;
            best_k = k;
        }
    }
    *cost_out = best_cost;
    return best_k;
}

static void add_bad(struct seq_verdict *v, const unsigned char *p, uint64_t i,
                    enum seq_problem what, uint64_t expected)
{
    v->nbad++;
    if (v->nlisted < SEQ_MAX_BAD) {
        struct seq_bad_page *b = &v->bad[v->nlisted++];
        b->page = i;
        b->problem = what;
        b->counter = rd64(p, SEQ_OFF_COUNTER);
        b->trailer = rd64(p, SEQ_OFF_TRAILER);
        b->index = rd64(p, SEQ_OFF_INDEX);
        b->magic = rd64(p, SEQ_OFF_MAGIC);
        b->expected = expected;
    }
}

int seq_check(const unsigned char *mem, uint64_t npages, struct seq_verdict *v)
{
    uint8_t *kind = malloc(npages ? npages : 1);
    uint64_t *h = malloc((npages ? npages : 1) * sizeof(*h));
    uint64_t *tmp = malloc((npages ? npages : 1) * sizeof(*tmp));
    uint64_t i, ncons = 0, ntorn = 0, base = 0, step = 0;

    memset(v, 0, sizeof(*v));
    v->pages = npages;
    v->torn_page = -1;
    if (!kind || !h || !tmp) {
        free(kind);
        free(h);
        free(tmp);
        return -1;
    }

    /* 1. classify every page on its own */
    for (i = 0; i < npages; i++) {
        const unsigned char *p = mem + i * SEQ_PAGE;
        uint64_t c = rd64(p, SEQ_OFF_COUNTER), t = rd64(p, SEQ_OFF_TRAILER);
        h[i] = c;
        if (rd64(p, SEQ_OFF_MAGIC) != SEQ_MAGIC || rd64(p, SEQ_OFF_INDEX) != i)
            kind[i] = K_BROKEN;
        else if (c == t)
            kind[i] = K_CONSISTENT;
        else if (c == t + 1)
            kind[i] = K_TORN;
        else
            kind[i] = K_BROKEN;
        if (kind[i] == K_CONSISTENT)
            tmp[ncons++] = c;
    }

    /* 2. fit the best step model; candidates for the base: mode, mode-1 */
    if (ncons == 0) {
        for (i = 0; i < npages; i++)
            if (kind[i] == K_TORN)
                tmp[ntorn++] = h[i] - 1;
    }
    if (ncons + ntorn > 0) {
        uint64_t m = mode_of(tmp, ncons + ntorn), cost, best_cost = UINT64_MAX;
        uint64_t cands[2] = {m, m - 1};
        int c, ncands = m > 0 ? 2 : 1;
        for (c = 0; c < ncands; c++) {
            uint64_t k = best_step(kind, h, npages, cands[c], &cost);
            if (cost < best_cost) {
                best_cost = cost;
                base = cands[c];
                step = k;
            }
        }
        if (step == npages) { /* all pages at base+1: same as base+1, step 0 */
            base++;
            step = 0;
        }
    }
    free(tmp);

    /* 3. list every page that does not fit the model */
    for (i = 0; i < npages; i++) {
        const unsigned char *p = mem + i * SEQ_PAGE;
        uint64_t expected = i < step ? base + 1 : base;
        if (kind[i] == K_BROKEN) {
            enum seq_problem what;
            if (is_zero(p, SEQ_PAGE))
                what = SEQ_ZEROED;
            else if (rd64(p, SEQ_OFF_MAGIC) != SEQ_MAGIC)
                what = SEQ_BAD_MAGIC;
            else if (rd64(p, SEQ_OFF_INDEX) != i)
                what = SEQ_WRONG_INDEX;
            else
                what = SEQ_TORN_BAD;
            add_bad(v, p, i, what, expected);
        } else if (kind[i] == K_TORN) {
            if (i == step && h[i] == base + 1)
                v->torn_page = (int64_t)i;
            else
                add_bad(v, p, i, SEQ_TORN_AWAY, expected);
        } else if (h[i] != expected) {
            add_bad(v, p, i, SEQ_WRONG_COUNTER, expected);
        }
    }
    free(kind);
    free(h);

    v->base = base;
    v->step_at = step;
    v->pass = v->nbad == 0 && npages > 0;
    return v->pass;
}

const char *seq_problem_name(enum seq_problem p)
{
    switch (p) {
    case SEQ_OK:
        return "ok";
    case SEQ_ZEROED:
        return "zeroed";
    case SEQ_BAD_MAGIC:
        return "bad_magic";
    case SEQ_WRONG_INDEX:
        return "wrong_index";
    case SEQ_TORN_BAD:
        return "header_trailer_mismatch";
    case SEQ_TORN_AWAY:
        return "torn_away_from_step";
    case SEQ_WRONG_COUNTER:
        return "wrong_counter";
    }
    return "unknown";
}

void seq_describe(const struct seq_bad_page *b, uint64_t step_at, char *buf, size_t len)
{
    switch (b->problem) {
    case SEQ_ZEROED:
        snprintf(buf, len, "page %" PRIu64 ": zeroed page (all bytes 0), expected counter %" PRIu64,
                 b->page, b->expected);
        break;
    case SEQ_BAD_MAGIC:
        snprintf(buf, len,
                 "page %" PRIu64 ": bad magic 0x%016" PRIx64 " (counter=%" PRIu64
                 "), expected magic 0x%016llx and counter %" PRIu64,
                 b->page, b->magic, b->counter, (unsigned long long)SEQ_MAGIC, b->expected);
        break;
    case SEQ_WRONG_INDEX:
        snprintf(buf, len,
                 "page %" PRIu64 ": holds the data of page %" PRIu64 " (index=%" PRIu64
                 " counter=%" PRIu64 "), expected index %" PRIu64 " counter %" PRIu64,
                 b->page, b->index, b->index, b->counter, b->page, b->expected);
        break;
    case SEQ_TORN_BAD:
        snprintf(buf, len,
                 "page %" PRIu64 ": header/trailer mismatch (counter=%" PRIu64 " trailer=%" PRIu64
                 "), expected both %" PRIu64,
                 b->page, b->counter, b->trailer, b->expected);
        break;
    case SEQ_TORN_AWAY:
        snprintf(buf, len,
                 "page %" PRIu64 ": torn page (counter=%" PRIu64 " trailer=%" PRIu64
                 ") away from the step at page %" PRIu64 ", expected counter %" PRIu64,
                 b->page, b->counter, b->trailer, step_at, b->expected);
        break;
    case SEQ_WRONG_COUNTER:
        if (b->counter < b->expected)
            snprintf(buf, len,
                     "page %" PRIu64 ": counter=%" PRIu64 ", expected %" PRIu64
                     " (stale by %" PRIu64 " pass%s)",
                     b->page, b->counter, b->expected, b->expected - b->counter,
                     b->expected - b->counter == 1 ? "" : "es");
        else
            snprintf(buf, len,
                     "page %" PRIu64 ": counter=%" PRIu64 ", expected %" PRIu64
                     " (ahead by %" PRIu64 " pass%s)",
                     b->page, b->counter, b->expected, b->counter - b->expected,
                     b->counter - b->expected == 1 ? "" : "es");
        break;
    case SEQ_OK:
        snprintf(buf, len, "page %" PRIu64 ": ok", b->page);
        break;
    }
}
