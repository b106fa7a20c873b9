/*
 * probe: access latency of every page of a large region.
 *
 * Each round touches every page once, in a fresh seeded random permutation,
 * timing a read + write of one word with CLOCK_MONOTONIC.  With --wait-signal
 * the region is first filled with non-zero data and the measurement starts
 * on SIGUSR1 (so it can be armed right at the postcopy switch).
 */
#define _GNU_SOURCE
#include "common.h"
#include "latstats.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: probe [--size-mib N] [--seed S] [--duration SEC | --rounds R] [--prefill]\n"
    "             [--wait-signal] [--max-samples N] [--pidfile FILE] [--out FILE] [--raw FILE]\n"
    "  --size-mib N      region size (default 256)\n"
    "  --seed S          seed of the page permutation (default: from the time)\n"
    "  --duration SEC    measure for SEC seconds (0 = until SIGTERM/SIGINT)\n"
    "  --rounds R        measure R rounds (default 1 when --duration is not given)\n"
    "  --prefill         fill the region with non-zero data before measuring\n"
    "  --wait-signal     prefill, write the pid file, then wait for SIGUSR1 to start\n"
    "  --start-delay-ms N  with --wait-signal: start N ms (CLOCK_MONOTONIC, which stands\n"
    "                    still while the VM is stopped) after SIGUSR1\n"
    "  --max-samples N   at most N records in --raw (default 4194304; the statistics\n"
    "                    always cover every sample)\n"
    "  --pidfile FILE    written when ready (with --wait-signal: ready for SIGUSR1)\n"
    "  --out FILE        JSON {count, p50_us, ..., histogram, started_at, ended_at, seed}\n"
    "  --raw FILE        binary records {u64 monotonic_ns, u32 page, u32 latency_ns},\n"
    "                    little-endian on every guest\n"
    "  --selftest-latencies FILE  (testing) statistics of the latencies in FILE\n"
    "                    (decimal ns, whitespace separated) written to --out or stdout\n";

enum { OPT_ROUNDS = WL_OPT_FIRST_EXTRA, OPT_PREFILL, OPT_WAIT, OPT_RAW, OPT_MAX, OPT_SELFTEST, OPT_DELAY };

struct opts {
    uint64_t rounds;
    int rounds_given, prefill, wait_signal;
    uint64_t max_samples, start_delay_ms;
    const char *raw, *selftest;
};

static void handle(int code, const char *arg, void *ctx)
{
    struct opts *o = ctx;
    switch (code) {
    case OPT_ROUNDS:
        o->rounds = wl_opt_u64("rounds", arg, 1, 1000000000ULL);
        o->rounds_given = 1;
        break;
    case OPT_PREFILL:
        o->prefill = 1;
        break;
    case OPT_WAIT:
        o->wait_signal = 1;
        break;
    case OPT_MAX:
        o->max_samples = wl_opt_u64("max-samples", arg, 1, 1ULL << 30);
        break;
    case OPT_DELAY:
        o->start_delay_ms = wl_opt_u64("start-delay-ms", arg, 0, 3600000ULL);
        break;
    case OPT_RAW:
    case OPT_SELFTEST:
        if (*arg == '\0')
            wl_usage_error("invalid value '' for --%s: empty path",
                           code == OPT_RAW ? "raw" : "selftest-latencies");
        if (code == OPT_RAW)
            o->raw = arg;
        else
            o->selftest = arg;
        break;
    }
}

struct raw_record {
    uint64_t t_ns;
    uint32_t page;
    uint32_t lat_ns;
};

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig)
{
    (void)sig;
    got_usr1 = 1;
}

/* --selftest-latencies: statistics of known input, no measurement. */
static int selftest(const char *path, const char *out)
{
    FILE *f = fopen(path, "r");
    unsigned long long v;
    struct lat_acc acc;
    struct lat_stats st;
    struct wl_json j = {0};
    if (!f)
        wl_die(1, "cannot open %s", path);
    lat_init(&acc);
    while (fscanf(f, "%llu", &v) == 1)
        lat_add(&acc, v > UINT32_MAX ? UINT32_MAX : (uint32_t)v);
    if (!feof(f))
        wl_usage_error("%s: not a list of decimal latencies in ns", path);
    fclose(f);
    lat_compute(&acc, &st);
    wl_json_begin(&j, NULL, '{');
    lat_json(&j, &st);
    wl_json_end(&j, '}');
    if (out)
        wl_json_write(&j, out);
    else {
        printf("%.*s", (int)j.len, j.buf);
        printf("\n");
        wl_json_free(&j);
    }
    lat_free(&acc);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option extra[] = {
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"prefill", no_argument, NULL, OPT_PREFILL},
        {"wait-signal", no_argument, NULL, OPT_WAIT},
        {"raw", required_argument, NULL, OPT_RAW},
        {"max-samples", required_argument, NULL, OPT_MAX},
        {"selftest-latencies", required_argument, NULL, OPT_SELFTEST},
        {"start-delay-ms", required_argument, NULL, OPT_DELAY},
        {NULL, 0, NULL, 0},
    };
    struct wl_common c = {.size_mib = 256, .duration_s = -1};
    struct opts o = {.rounds = 1, .max_samples = 1ULL << 22};
    struct wl_json j = {0};
    struct wl_rng rng;
    sigset_t old;
    unsigned char *mem;
    uint32_t *perm;
    struct raw_record *rec = NULL;
    struct lat_acc acc;
    struct lat_stats st;
    size_t bytes, npages, page_size, nraw = 0, i;
    uint64_t round, start, end, deadline;
    int raw_truncated = 0, locked = 0, duration_mode;

    wl_parse_args(argc, argv,
                  WL_OPT_SIZE_MIB | WL_OPT_DURATION | WL_OPT_SEED | WL_OPT_PIDFILE | WL_OPT_OUT,
                  extra, handle, &o, usage, &c);
    if (o.selftest)
        return selftest(o.selftest, c.out);
    if (c.duration_s >= 0 && o.rounds_given)
        wl_usage_error("--duration and --rounds are mutually exclusive");
    duration_mode = c.duration_s >= 0;
    wl_note_seed(&c);
    if (o.wait_signal)
        o.prefill = 1;

    bytes = wl_size_bytes(&c);
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    npages = bytes / page_size;
    wl_install_stop_handlers();
    wl_rng_seed(&rng, c.seed);

    wl_block_usr1(on_usr1, 0, &old);

    perm = malloc(npages * sizeof(*perm));
    if (o.raw)
        rec = malloc(o.max_samples * sizeof(*rec)); /* untouched pages cost nothing */
    if (!perm || (o.raw && !rec))
        wl_die(1, "cannot allocate the sample buffers (try a smaller --max-samples)");
    lat_init(&acc);
    mem = wl_map_anon(bytes, o.prefill);
    if (o.prefill) {
        for (i = 0; i < npages; i++) {
            memset(mem + i * page_size, 0xa5, page_size);
            *(uint64_t *)(mem + i * page_size) = wl_mix64(i) | 1;
        }
        locked = wl_try_lock(mem, bytes);
    }

    /* the first round's order is ready before the start signal */
    wl_permutation(perm, npages, &rng);

    wl_pidfile_write(c.pidfile);
    if (o.wait_signal) {
        sigset_t wait_mask = old;
        sigdelset(&wait_mask, SIGUSR1);
        printf("probe: ready, waiting for SIGUSR1 (pid %ld)\n", (long)getpid());
        fflush(stdout);
        while (!got_usr1 && !wl_stop_requested)
            sigsuspend(&wait_mask);
        /* Sleeping here rather than in a helper the harness starts: a process woken on the destination brings
         * faults of its own into the vCPU's postcopy blocktime, which the probe's accesses do not see. */
        if (o.start_delay_ms) {
            struct timespec left = {(time_t)(o.start_delay_ms / 1000), (long)(o.start_delay_ms % 1000) * 1000000L};
            while (!wl_stop_requested && clock_nanosleep(CLOCK_MONOTONIC, 0, &left, &left) == EINTR)
                ;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);

    start = wl_now_ns();
    deadline = duration_mode && c.duration_s > 0 ? start + (uint64_t)(c.duration_s * 1e9)
                                                  : UINT64_MAX;
    for (round = 0; !wl_stop_requested && (duration_mode || round < o.rounds); round++) {
        if (round > 0)
            wl_shuffle(perm, npages, &rng);
        for (i = 0; i < npages && !wl_stop_requested; i++) {
            volatile uint64_t *w = (volatile uint64_t *)(mem + (size_t)perm[i] * page_size);
            uint64_t t0, t1, d;
            uint32_t lat;
            t0 = wl_now_ns();
            *w = *w + 1;
            t1 = wl_now_ns();
            d = t1 - t0;
            lat = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
            lat_add(&acc, lat);
            if (rec) {
                if (nraw < o.max_samples)
                    rec[nraw++] = (struct raw_record){t0, perm[i], lat};
                else
                    raw_truncated = 1;
            }
            if (t1 >= deadline)
                break;
        }
        if (wl_now_ns() >= deadline)
            break;
    }
    end = wl_now_ns();

    /* The raw format is little-endian whatever the guest (harness/analysis/latency.py reads it so): on a big-endian
     * guest (s390x) the records are byte-swapped here, after the timed loop, never inside it. */
    for (i = 0; i < nraw; i++)
        rec[i] = (struct raw_record){htole64(rec[i].t_ns), htole32(rec[i].page), htole32(rec[i].lat_ns)};
    if (o.raw && wl_write_file_atomic(o.raw, rec, nraw * sizeof(*rec)) != 0)
        wl_die(1, "cannot write %s", o.raw);
    if (c.out) {
        lat_compute(&acc, &st);
        wl_json_begin(&j, NULL, '{');
        lat_json(&j, &st);
        wl_json_double(&j, "started_at", (double)start / 1e9);
        wl_json_double(&j, "ended_at", (double)end / 1e9);
        wl_json_u64(&j, "started_at_ns", start);
        wl_json_u64(&j, "ended_at_ns", end);
        wl_json_u64(&j, "seed", c.seed);
        wl_json_u64(&j, "size_mib", c.size_mib);
        wl_json_u64(&j, "pages", npages);
        wl_json_u64(&j, "page_size", page_size);
        wl_json_u64(&j, "rounds_completed", acc.count / (npages ? npages : 1));
        wl_json_bool(&j, "prefilled", o.prefill);
        wl_json_bool(&j, "mlocked", locked);
        if (o.raw) {
            wl_json_str(&j, "raw", o.raw);
            wl_json_u64(&j, "raw_records", nraw);
            wl_json_bool(&j, "raw_truncated", raw_truncated);
        }
        wl_json_str(&j, "stopped_by",
                    wl_stop_requested ? "signal" : duration_mode ? "duration" : "rounds");
        wl_json_end(&j, '}');
        wl_json_write(&j, c.out);
    }
    wl_pidfile_remove(c.pidfile);
    return 0;
}
