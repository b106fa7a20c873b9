/*
 * pagelife: pages that go through the transitions migration handles on
 * separate code paths, each page's final content known exactly.
 *
 * The region (--size-mib, anonymous, 2 MiB aligned; --thp: madvise
 * MADV_HUGEPAGE, else MADV_NOHUGEPAGE) is cut into chunks of --chunk-kib
 * (64 KiB: a huge page holds every class and the discards split it; 2048:
 * a chunk is a huge page, dropped or rewritten whole); chunk c belongs to
 * class c % NCLASSES.  Before the pid file appears
 * every page holds its initial content; each SIGUSR1 then runs the next phase
 * (the harness sends it once the pages of the phase before were sent):
 *
 *   class              start   phase 1                  phase 2  phase 3
 *   kept               gen0    -                        -        -
 *   zeroed             gen0    zeroed                   -        -
 *   zero-then-written  zero    gen1                     -        -
 *   discarded-reused   gen0    MADV_DONTNEED, churn, gen1
 *   unmapped-remapped  gen0    munmap + mmap, churn, gen1
 *   discarded-left     gen0    MADV_DONTNEED (reads zero; its frame is free)
 *   sparse-changed     gen0    8 words gen1 (an xbzrle delta)
 *   zeroed-restored    gen0    rewritten gen0           zeroed   gen0
 *
 * "churn": a scratch region as large as what was just freed is written with
 * foreign pages and unmapped, so the frames the guest freed hold other data
 * and are handed out again before the class is rewritten.  "zero" pages are
 * written (a zero store allocates a zeroed frame): the guest-physical page is
 * zero, not merely unmapped.  zeroed-restored is cached by xbzrle in the pass
 * after phase 1, sent as a zero page after phase 2, and holds its first
 * content again after phase 3: a cache left stale by the zero page sees "no
 * change" there and skips the page.
 *
 * Pattern of page i, generation g: word 0 = PL_MAGIC ^ g, word 1 = i,
 * words 2.. = mix64(seed, i, g) + k (never zero); a foreign page has
 * word 0 = PL_FOREIGN.  So a wrong page says what it holds instead.
 *
 * On SIGTERM/SIGINT every page is checked against what the phases reached
 * imply; the result goes to --out (JSON, bad pages listed up to
 * PL_MAX_LISTED) and one line to stdout:
 *   PAGELIFE PASS pages=N phase=P
 *   PAGELIFE FAIL M of N pages wrong: page I (class): expected X, found Y
 * --status FILE holds {"phase", "anon_huge_kib", ...} after each phase.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define DEFAULT_CHUNK_KIB 64u
#define HUGE (2u * 1024 * 1024)
#define PL_MAGIC 0x50414745464c4946ULL   /* "PAGEFLIF" */
#define PL_FOREIGN 0x464f524549474e21ULL /* "FOREIGN!" */
#define PL_MAX_LISTED 64
#define SPARSE_WORDS 8
#define LAST_PHASE 3

static const char usage[] =
    "usage: pagelife [--size-mib N] [--chunk-kib K] [--thp] [--seed S] [--status FILE] [--pidfile FILE]\n"
    "                [--out FILE]\n"
    "  --size-mib N    region size (default 32; a whole number of 8-chunk class cycles)\n"
    "  --chunk-kib K   pages of one class come in runs of K KiB (4..2048, a power of 2; default 64)\n"
    "  --thp           madvise(MADV_HUGEPAGE) the region (default MADV_NOHUGEPAGE)\n"
    "  --seed S        seed of the page contents (default 1)\n"
    "  --status FILE   JSON status after the set-up and after each phase\n"
    "  --pidfile FILE  written once every page holds its initial content\n"
    "  --out FILE      JSON check result, written on SIGTERM/SIGINT\n"
    "SIGUSR1 runs the next phase (3 in all); SIGTERM checks every page and exits.\n";

enum { OPT_THP = WL_OPT_FIRST_EXTRA, OPT_STATUS, OPT_CHUNK };

enum cls {
    KEPT, ZEROED, ZERO_THEN_WRITTEN, DISCARDED_REUSED, UNMAPPED_REMAPPED, DISCARDED_LEFT,
    SPARSE_CHANGED, ZEROED_RESTORED, NCLASSES
};
static const char *const class_names[NCLASSES] = {
    "kept", "zeroed", "zero-then-written", "discarded-reused", "unmapped-remapped",
    "discarded-left", "sparse-changed", "zeroed-restored",
};

/* What a page holds (expected or found). */
enum kind { K_ZERO, K_GEN0, K_GEN1, K_SPARSE1, K_FOREIGN, K_OTHER_PAGE, K_GARBAGE };
static const char *const kind_names[] = {
    "zero", "gen0", "gen1", "gen0 with 8 words gen1", "a foreign page", "another page's data", "garbage",
};

struct opts {
    int thp;
    uint64_t chunk_kib;
    const char *status;
};

struct state {
    unsigned char *mem;
    size_t bytes;
    uint64_t npages, seed, chunk_pages;
    int phase, thp;
    uint64_t zeroings;          /* page zeroings done by the phases (each sent as a zero page later) */
    uint64_t churned_pages;
    long anon_huge_kib_start;
};

static volatile sig_atomic_t phase_requests;

static void on_usr1(int sig)
{
    (void)sig;
    phase_requests++;
}

static void handle(int code, const char *arg, void *ctx)
{
    struct opts *o = ctx;
    if (code == OPT_THP)
        o->thp = 1;
    else if (code == OPT_CHUNK) {
        o->chunk_kib = wl_opt_u64("chunk-kib", arg, 4, 2048);
        if (o->chunk_kib & (o->chunk_kib - 1))
            wl_usage_error("invalid value '%s' for --chunk-kib: not a power of 2", arg);
    }
    else if (code == OPT_STATUS) {
        if (*arg == '\0')
            wl_usage_error("invalid value '' for --status: empty path");
        o->status = arg;
    }
}

static uint64_t chunk_pages = DEFAULT_CHUNK_KIB / 4;

static enum cls class_of(uint64_t page) { return (enum cls)((page / chunk_pages) % NCLASSES); }

static uint64_t word_of(const struct state *s, uint64_t page, unsigned gen, unsigned k)
{
    if (k == 0)
        return PL_MAGIC ^ gen;
    if (k == 1)
        return page;
    return (wl_mix64(s->seed * 0x10001ULL + page * 4 + gen) + k) | 1;
}

static void write_gen(const struct state *s, uint64_t page, unsigned gen)
{
    volatile uint64_t *w = (volatile uint64_t *)(s->mem + page * PAGE);
    for (unsigned k = 0; k < WORDS; k++)
        w[k] = word_of(s, page, gen, k);
}

/* The words sparse-changed replaces, spread over the page. */
static int is_sparse_word(unsigned k) { return k >= 2 && k % (WORDS / SPARSE_WORDS) == 2; }

static void write_sparse(const struct state *s, uint64_t page)
{
    volatile uint64_t *w = (volatile uint64_t *)(s->mem + page * PAGE);
    for (unsigned k = 0; k < WORDS; k++)
        if (is_sparse_word(k))
            w[k] = word_of(s, page, 1, k);
}

static void write_zero(const struct state *s, uint64_t page)
{
    memset(s->mem + page * PAGE, 0, PAGE);
}

/* Expected content of `page` once `phase` phases ran. */
static enum kind expected(uint64_t page, int phase)
{
    switch (class_of(page)) {
    case KEPT:
        return K_GEN0;
    case ZEROED:
        return phase >= 1 ? K_ZERO : K_GEN0;
    case ZERO_THEN_WRITTEN:
        return phase >= 1 ? K_GEN1 : K_ZERO;
    case DISCARDED_REUSED:
    case UNMAPPED_REMAPPED:
        return phase >= 1 ? K_GEN1 : K_GEN0;
    case DISCARDED_LEFT:
        return phase >= 1 ? K_ZERO : K_GEN0;
    case SPARSE_CHANGED:
        return phase >= 1 ? K_SPARSE1 : K_GEN0;
    case ZEROED_RESTORED:
        return phase == 2 ? K_ZERO : K_GEN0;
    default:
        return K_GARBAGE;
    }
}

static int page_is(const struct state *s, uint64_t page, enum kind kind)
{
    const uint64_t *w = (const uint64_t *)(s->mem + page * PAGE);
    for (unsigned k = 0; k < WORDS; k++) {
        uint64_t want;
        switch (kind) {
        case K_ZERO: want = 0; break;
        case K_GEN0: want = word_of(s, page, 0, k); break;
        case K_GEN1: want = word_of(s, page, 1, k); break;
        case K_SPARSE1: want = word_of(s, page, is_sparse_word(k) ? 1 : 0, k); break;
        default: return 0;
        }
        if (w[k] != want)
            return 0;
    }
    return 1;
}

/* What a wrong page holds instead, for the report. */
static enum kind classify(const struct state *s, uint64_t page)
{
    const uint64_t *w = (const uint64_t *)(s->mem + page * PAGE);
    static const enum kind exact[] = {K_ZERO, K_GEN0, K_GEN1, K_SPARSE1};
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (page_is(s, page, exact[i]))
            return exact[i];
    if (w[0] == PL_FOREIGN)
        return K_FOREIGN;
    if ((w[0] == PL_MAGIC || w[0] == (PL_MAGIC ^ 1)) && w[1] != page)
        return K_OTHER_PAGE;
    return K_GARBAGE;
}

static long anon_huge_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void write_status(const struct state *s, const char *path)
{
    struct wl_json j = {0};
    if (!path)
        return;
    wl_json_begin(&j, NULL, '{');
    wl_json_i64(&j, "phase", s->phase);
    wl_json_u64(&j, "pages", s->npages);
    wl_json_u64(&j, "zeroings", s->zeroings);
    wl_json_i64(&j, "anon_huge_kib", anon_huge_kib());
    wl_json_double(&j, "t_ns", (double)wl_now_ns());
    wl_json_end(&j, '}');
    wl_json_write(&j, path);
}

static void advise(void *p, size_t len, int thp)
{
    /* best effort: a kernel without THP still runs the rest */
    (void)madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

/* Write foreign pages into a scratch region as large as what was freed, then free it again. */
static void churn(struct state *s, uint64_t pages)
{
    unsigned char *scratch;
    if (pages == 0)
        return;
    scratch = wl_map_anon(pages * PAGE, 0);
    for (uint64_t i = 0; i < pages; i++) {
        uint64_t *w = (uint64_t *)(scratch + i * PAGE);
        for (unsigned k = 0; k < WORDS; k++)
            w[k] = k == 0 ? PL_FOREIGN : wl_mix64(i * 7 + k) | 1;
    }
    munmap(scratch, pages * PAGE);
    s->churned_pages += pages;
}

static void phase1(struct state *s)
{
    uint64_t freed = 0;
    for (uint64_t chunk = 0; chunk < s->npages / chunk_pages; chunk++) {
        uint64_t first = chunk * chunk_pages;
        unsigned char *p = s->mem + first * PAGE;
        size_t len = (size_t)chunk_pages * PAGE;
        switch (class_of(first)) {
        case DISCARDED_REUSED:
        case DISCARDED_LEFT:
            if (madvise(p, len, MADV_DONTNEED) != 0)
                wl_die(1, "madvise(MADV_DONTNEED) of chunk %" PRIu64, chunk);
            freed += chunk_pages;
            break;
        case UNMAPPED_REMAPPED:
            if (munmap(p, len) != 0)
                wl_die(1, "munmap of chunk %" PRIu64, chunk);
            if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
                wl_die(1, "mmap(MAP_FIXED) of chunk %" PRIu64, chunk);
            advise(p, len, s->thp);
            freed += chunk_pages;
            break;
        default:
            break;
        }
    }
    churn(s, freed);
    for (uint64_t i = 0; i < s->npages; i++) {
        switch (class_of(i)) {
        case ZEROED:
            write_zero(s, i);
            s->zeroings++;
            break;
        case ZERO_THEN_WRITTEN:
        case DISCARDED_REUSED:
        case UNMAPPED_REMAPPED:
            write_gen(s, i, 1);
            break;
        case SPARSE_CHANGED:
            write_sparse(s, i);
            break;
        case ZEROED_RESTORED:
            write_gen(s, i, 0);   /* same content, but dirty: sent (and cached by xbzrle) once more */
            break;
        default:
            break;
        }
    }
}

static void phase_restored(struct state *s, int zero)
{
    for (uint64_t i = 0; i < s->npages; i++) {
        if (class_of(i) != ZEROED_RESTORED)
            continue;
        if (zero) {
            write_zero(s, i);
            s->zeroings++;
        } else {
            write_gen(s, i, 0);
        }
    }
}

static void run_phase(struct state *s)
{
    if (s->phase >= LAST_PHASE)
        return;
    s->phase++;
    if (s->phase == 1)
        phase1(s);
    else
        phase_restored(s, s->phase == 2);
}

static void check_and_report(const struct state *s, const char *out)
{
    struct wl_json j = {0};
    uint64_t bad = 0, per_class_bad[NCLASSES] = {0}, per_class[NCLASSES] = {0};
    char first[256] = "", line[384];
    size_t listed = 0;
    uint64_t t0 = wl_now_ns();

    wl_json_begin(&j, NULL, '{');
    wl_json_begin(&j, "listed", '[');
    for (uint64_t i = 0; i < s->npages; i++) {
        enum cls c = class_of(i);
        enum kind want = expected(i, s->phase);
        per_class[c]++;
        if (page_is(s, i, want))
            continue;
        enum kind found = classify(s, i);
        per_class_bad[c]++;
        if (bad++ == 0)
            snprintf(first, sizeof(first), "page %" PRIu64 " (%s): expected %s, found %s", i, class_names[c],
                     kind_names[want], kind_names[found]);
        if (listed < PL_MAX_LISTED) {
            const uint64_t *w = (const uint64_t *)(s->mem + i * PAGE);
            char hex[40];
            listed++;
            wl_json_begin(&j, NULL, '{');
            wl_json_u64(&j, "page", i);
            wl_json_str(&j, "class", class_names[c]);
            wl_json_str(&j, "expected", kind_names[want]);
            wl_json_str(&j, "found", kind_names[found]);
            snprintf(hex, sizeof(hex), "0x%016" PRIx64, w[0]);
            wl_json_str(&j, "word0", hex);
            wl_json_u64(&j, "word1", w[1]);
            wl_json_end(&j, '}');
        }
    }
    wl_json_end(&j, ']');
    if (bad == 0)
        snprintf(line, sizeof(line), "PAGELIFE PASS pages=%" PRIu64 " phase=%d", s->npages, s->phase);
    else
        snprintf(line, sizeof(line), "PAGELIFE FAIL %" PRIu64 " of %" PRIu64 " pages wrong: %s", bad,
                 s->npages, first);
    printf("%s\n", line);
    fflush(stdout);
    wl_json_str(&j, "result", bad == 0 ? "PASS" : "FAIL");
    wl_json_str(&j, "message", line);
    wl_json_u64(&j, "pages", s->npages);
    wl_json_u64(&j, "bad_pages", bad);
    wl_json_i64(&j, "phase", s->phase);
    wl_json_u64(&j, "zeroings", s->zeroings);
    wl_json_u64(&j, "churned_pages", s->churned_pages);
    wl_json_bool(&j, "thp_requested", s->thp);
    wl_json_u64(&j, "chunk_kib", chunk_pages * 4);
    wl_json_i64(&j, "anon_huge_kib_start", s->anon_huge_kib_start);
    wl_json_i64(&j, "anon_huge_kib_end", anon_huge_kib());
    wl_json_double(&j, "check_s", (double)(wl_now_ns() - t0) / 1e9);
    wl_json_begin(&j, "classes", '{');
    for (int c = 0; c < NCLASSES; c++) {
        wl_json_begin(&j, class_names[c], '{');
        wl_json_u64(&j, "pages", per_class[c]);
        wl_json_u64(&j, "bad", per_class_bad[c]);
        wl_json_str(&j, "expected", kind_names[expected((uint64_t)c * chunk_pages, s->phase)]);
        wl_json_end(&j, '}');
    }
    wl_json_end(&j, '}');
    wl_json_end(&j, '}');
    if (out)
        wl_json_write(&j, out);
    else
        wl_json_free(&j);
}

int main(int argc, char **argv)
{
    static const struct option extra[] = {
        {"thp", no_argument, NULL, OPT_THP},
        {"status", required_argument, NULL, OPT_STATUS},
        {"chunk-kib", required_argument, NULL, OPT_CHUNK},
        {NULL, 0, NULL, 0},
    };
    struct wl_common c = {.size_mib = 32, .seed = 1};
    struct opts o = {.chunk_kib = DEFAULT_CHUNK_KIB};
    struct state s = {0};
    sigset_t old, wait_mask;
    unsigned char *raw;

    wl_parse_args(argc, argv, WL_OPT_SIZE_MIB | WL_OPT_SEED | WL_OPT_PIDFILE | WL_OPT_OUT, extra, handle, &o,
                  usage, &c);
    if (!c.seed_given)
        c.seed = 1;
    s.bytes = wl_size_bytes(&c);
    s.npages = s.bytes / PAGE;
    chunk_pages = o.chunk_kib / 4;
    if (s.npages % (chunk_pages * NCLASSES) != 0)
        wl_usage_error("--size-mib %llu: not a whole number of %u chunks of %llu KiB",
                       (unsigned long long)c.size_mib, NCLASSES, (unsigned long long)o.chunk_kib);
    s.seed = c.seed;
    s.thp = o.thp;
    wl_install_stop_handlers();

    wl_block_usr1(on_usr1, 1, &old);   /* SIGTERM too: a check never interrupts a phase */

    /* 2 MiB aligned, so a THP region can hold huge pages from its first byte */
    raw = wl_map_anon(s.bytes + HUGE, 0);
    s.mem = (unsigned char *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    advise(s.mem, s.bytes, s.thp);
    for (uint64_t i = 0; i < s.npages; i++) {
        if (class_of(i) == ZERO_THEN_WRITTEN)
            write_zero(&s, i);
        else
            write_gen(&s, i, 0);
    }
    s.anon_huge_kib_start = anon_huge_kib();
    write_status(&s, o.status);
    wl_pidfile_write(c.pidfile);

    wait_mask = old;
    sigdelset(&wait_mask, SIGUSR1);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    while (!wl_stop_requested) {
        if (phase_requests > 0) {
            phase_requests--;
            run_phase(&s);
            write_status(&s, o.status);
            continue;
        }
        sigsuspend(&wait_mask);
    }
    check_and_report(&s, c.out);
    wl_pidfile_remove(c.pidfile);
    return 0;
}
