/*
 * dirty: dirty N MiB of anonymous memory at a controlled rate.
 *
 * Every page write stores non-zero words that change on every write
 * ((mix(sequence, page) + k) | 1), so neither zero-page detection nor
 * xbzrle can hide it (use --full-page to rewrite whole pages, which also
 * defeats xbzrle's delta encoding).  The rate is enforced with a token bucket
 * and clock_nanosleep; a stall (e.g. the VM being paused) is not caught up
 * beyond 100 ms worth of tokens.
 */
#define _GNU_SOURCE
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: dirty [--size-mib N] [--rate-mibps R|max] [--order seq|random] [--full-page] [--prefill]\n"
    "             [--duration SEC] [--seed S] [--status FILE] [--rate-log FILE] [--pidfile FILE] [--out FILE]\n"
    "  --size-mib N      memory region to dirty (default 64)\n"
    "  --rate-mibps R    dirty rate in MiB/s; 0 or max = as fast as possible (default max)\n"
    "  --order O         seq (page order) or random (seeded permutation per pass; default seq)\n"
    "  --full-page       rewrite whole pages instead of 8 words per page\n"
    "  --prefill         make every page non-zero once, flat out, before the pidfile appears\n"
    "                    (a large region then costs a full RAM pass to migrate from the start)\n"
    "  --duration SEC    stop after SEC seconds (default 0 = until SIGTERM/SIGINT)\n"
    "  --seed S          seed of the random order and of the data (default: from the time)\n"
    "  --status FILE     JSON status rewritten about once a second\n"
    "  --rate-log FILE   append one line \"<CLOCK_MONOTONIC ns> <pages dirtied so far>\" every 100 ms\n"
    "                    (the workload's own achieved rate over time, e.g. under a CPU throttle)\n"
    "  --pidfile FILE    written once the region is allocated and dirtying starts\n"
    "  --out FILE        final JSON result, written on exit (also on SIGTERM/SIGINT)\n";

enum { OPT_RATE = WL_OPT_FIRST_EXTRA, OPT_ORDER, OPT_FULL_PAGE, OPT_STATUS, OPT_PREFILL, OPT_RATE_LOG };

#define RATE_LOG_INTERVAL_NS 100000000ULL

#define WORDS_PER_PAGE_SPARSE 8
#define FIRST_PAGES 8

struct opts {
    double rate_mibps; /* 0 = max */
    int random_order;
    int full_page;
    int prefill;
    const char *status;
    const char *rate_log;
};

static void handle(int code, const char *arg, void *ctx)
{
    struct opts *o = ctx;
    switch (code) {
    case OPT_RATE:
        o->rate_mibps = strcmp(arg, "max") == 0 ? 0 : wl_opt_double("rate-mibps", arg, 0, 1e6);
        break;
    case OPT_ORDER:
        if (strcmp(arg, "seq") == 0)
            o->random_order = 0;
        else if (strcmp(arg, "random") == 0)
            o->random_order = 1;
        else
            wl_usage_error("invalid value '%s' for --order: expected seq or random", arg);
        break;
    case OPT_FULL_PAGE:
        o->full_page = 1;
        break;
    case OPT_PREFILL:
        o->prefill = 1;
        break;
    case OPT_STATUS:
        if (*arg == '\0')
            wl_usage_error("invalid value '' for --status: empty path");
        o->status = arg;
        break;
    case OPT_RATE_LOG:
        if (*arg == '\0')
            wl_usage_error("invalid value '' for --rate-log: empty path");
        o->rate_log = arg;
        break;
    }
}

struct state {
    uint64_t start_ns, pages_dirtied, passes;
    size_t page_size;
    double requested_mibps;
};

static double achieved_mibps(const struct state *s, uint64_t now)
{
    double el = (double)(now - s->start_ns) / 1e9;
    return el > 0 ? (double)s->pages_dirtied * (double)s->page_size / (double)WL_MIB / el : 0;
}

static void write_status(const struct state *s, const char *path, uint64_t now)
{
    struct wl_json j = {0};
    wl_json_begin(&j, NULL, '{');
    wl_json_double(&j, "elapsed_s", (double)(now - s->start_ns) / 1e9);
    wl_json_u64(&j, "pages_dirtied", s->pages_dirtied);
    wl_json_u64(&j, "bytes_dirtied", s->pages_dirtied * s->page_size);
    wl_json_double(&j, "achieved_mibps", achieved_mibps(s, now));
    wl_json_double(&j, "requested_mibps", s->requested_mibps);
    wl_json_u64(&j, "passes", s->passes);
    wl_json_end(&j, '}');
    wl_json_write(&j, path);
}

static inline void dirty_page(unsigned char *page, size_t page_size, uint64_t seq, uint64_t idx,
                              int full)
{
    volatile uint64_t *w = (volatile uint64_t *)page;
    uint64_t base = wl_mix64(seq * 0x9e3779b97f4a7c15ULL ^ idx);
    size_t nwords = page_size / 8, k;
    if (full) {
        for (k = 0; k < nwords; k++)
            w[k] = (base + k * 0x9e3779b97f4a7c15ULL) | 1;
    } else {
        size_t stride = nwords / WORDS_PER_PAGE_SPARSE;
        for (k = 0; k < WORDS_PER_PAGE_SPARSE; k++)
            w[k * stride] = (base + k) | 1;
    }
}

int main(int argc, char **argv)
{
    static const struct option extra[] = {
        {"rate-mibps", required_argument, NULL, OPT_RATE},
        {"order", required_argument, NULL, OPT_ORDER},
        {"full-page", no_argument, NULL, OPT_FULL_PAGE},
        {"status", required_argument, NULL, OPT_STATUS},
        {"prefill", no_argument, NULL, OPT_PREFILL},
        {"rate-log", required_argument, NULL, OPT_RATE_LOG},
        {NULL, 0, NULL, 0},
    };
    struct wl_common c = {.size_mib = 64};
    struct opts o = {0};
    struct state s = {0};
    struct wl_rng rng;
    struct wl_json j = {0};
    unsigned char *mem;
    uint32_t *perm = NULL, first_pages[FIRST_PAGES];
    size_t bytes, npages, pos = 0, chunk, nfirst = 0, i;
    uint64_t deadline, now, last_refill, next_status, next_log;
    FILE *rate_log = NULL;
    double rate_bps, tokens = 0, cap;
    int locked;

    wl_parse_args(argc, argv,
                  WL_OPT_SIZE_MIB | WL_OPT_DURATION | WL_OPT_SEED | WL_OPT_PIDFILE | WL_OPT_OUT,
                  extra, handle, &o, usage, &c);
    bytes = wl_size_bytes(&c);
    wl_note_seed(&c);
    s.page_size = (size_t)sysconf(_SC_PAGESIZE);
    s.requested_mibps = o.rate_mibps;
    npages = bytes / s.page_size;
    wl_install_stop_handlers();
    wl_rng_seed(&rng, c.seed);

    mem = wl_map_anon(bytes, 1);
    locked = wl_try_lock(mem, bytes);
    if (o.random_order) {
        perm = malloc(npages * sizeof(*perm));
        if (!perm)
            wl_die(1, "cannot allocate the page permutation");
        for (i = 0; i < npages; i++)
            perm[i] = (uint32_t)i;
    }

    rate_bps = o.rate_mibps * (double)WL_MIB;
    /* about 1 ms worth of pages per token-bucket step, 1..256 pages */
    chunk = rate_bps > 0 ? (size_t)(rate_bps / 1000 / (double)s.page_size) : 256;
    if (chunk < 1)
        chunk = 1;
    if (chunk > 256)
        chunk = 256;
    cap = rate_bps * 0.1;
    if (cap < (double)(chunk * s.page_size))
        cap = (double)(chunk * s.page_size);

    if (o.rate_log) {
        rate_log = fopen(o.rate_log, "w");
        if (!rate_log)
            wl_die(1, "cannot open --rate-log file %s", o.rate_log);
    }

    if (o.prefill)
        for (i = 0; i < npages; i++)
            dirty_page(mem + i * s.page_size, s.page_size, UINT64_MAX, i, o.full_page);

    wl_pidfile_write(c.pidfile);
    printf("dirty: pid=%ld size_mib=%llu pages=%zu rate_mibps=%g order=%s seed=%llu mlocked=%d\n",
           (long)getpid(), (unsigned long long)c.size_mib, npages, o.rate_mibps,
           o.random_order ? "random" : "seq", (unsigned long long)c.seed, locked);
    fflush(stdout);

    s.start_ns = last_refill = now = wl_now_ns();
    deadline = c.duration_s > 0 ? s.start_ns + (uint64_t)(c.duration_s * 1e9) : UINT64_MAX;
    next_status = s.start_ns + 1000000000ULL;
    next_log = s.start_ns;
    while (!wl_stop_requested) {
        now = wl_now_ns();
        if (now >= deadline)
            break;
        if (rate_log && now >= next_log) {
            fprintf(rate_log, "%llu %llu\n", (unsigned long long)now,
                    (unsigned long long)s.pages_dirtied);
            fflush(rate_log);
            next_log += RATE_LOG_INTERVAL_NS;
            if (next_log <= now)
                next_log = now + RATE_LOG_INTERVAL_NS;
        }
        if (o.status && now >= next_status) {
            write_status(&s, o.status, now);
            next_status += 1000000000ULL;
            if (next_status <= now)
                next_status = now + 1000000000ULL;
        }
        if (rate_bps > 0) {
            tokens += (double)(now - last_refill) * rate_bps / 1e9;
            last_refill = now;
            if (tokens > cap)
                tokens = cap;
            if (tokens < (double)(chunk * s.page_size)) {
                uint64_t wake = now + (uint64_t)(((double)(chunk * s.page_size) - tokens) /
                                                 rate_bps * 1e9) + 1;
                if (wake > deadline)
                    wake = deadline;
                if (o.status && wake > next_status)
                    wake = next_status;
                if (rate_log && wake > next_log)
                    wake = next_log;
                wl_sleep_until_ns(wake);
                continue;
            }
            tokens -= (double)(chunk * s.page_size);
        }
        for (i = 0; i < chunk; i++) {
            size_t page = pos;
            if (perm) {
                /* incremental Fisher-Yates: a fresh permutation every pass */
                size_t k = pos + (size_t)wl_rng_below(&rng, npages - pos);
                uint32_t t = perm[pos];
                perm[pos] = perm[k];
                perm[k] = t;
                page = perm[pos];
            }
            if (nfirst < FIRST_PAGES && s.passes == 0)
                first_pages[nfirst++] = (uint32_t)page;
            dirty_page(mem + page * s.page_size, s.page_size, s.pages_dirtied, page,
                       o.full_page);
            s.pages_dirtied++;
            if (++pos == npages) {
                pos = 0;
                s.passes++;
            }
        }
    }
    now = wl_now_ns();
    if (o.status)
        write_status(&s, o.status, now);
    if (rate_log) {
        fprintf(rate_log, "%llu %llu\n", (unsigned long long)now, (unsigned long long)s.pages_dirtied);
        fclose(rate_log);
    }

    if (c.out) {
        wl_json_begin(&j, NULL, '{');
        wl_json_double(&j, "requested_mibps", o.rate_mibps);
        wl_json_double(&j, "achieved_mibps", achieved_mibps(&s, now));
        wl_json_u64(&j, "pages_dirtied", s.pages_dirtied);
        wl_json_u64(&j, "bytes_dirtied", s.pages_dirtied * s.page_size);
        wl_json_double(&j, "elapsed_s", (double)(now - s.start_ns) / 1e9);
        wl_json_u64(&j, "passes", s.passes);
        wl_json_u64(&j, "seed", c.seed);
        wl_json_str(&j, "order", o.random_order ? "random" : "seq");
        wl_json_bool(&j, "full_page", o.full_page);
        wl_json_u64(&j, "size_mib", c.size_mib);
        wl_json_u64(&j, "pages", npages);
        wl_json_u64(&j, "page_size", s.page_size);
        wl_json_bool(&j, "mlocked", locked);
        wl_json_str(&j, "stopped_by", wl_stop_requested ? "signal" : "duration");
        wl_json_begin(&j, "first_pages", '[');
        for (i = 0; i < nfirst; i++)
            wl_json_u64(&j, NULL, first_pages[i]);
        wl_json_end(&j, ']');
        wl_json_end(&j, '}');
        wl_json_write(&j, c.out);
    }
    wl_pidfile_remove(c.pidfile);
    return 0;
}
