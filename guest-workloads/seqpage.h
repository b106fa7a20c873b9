/*
 * The sequential-increment pattern shared by seqinc (writer) and seqcheck
 * (checker).
 *
 * The file is an array of SEQ_PAGE-byte pages.  Each page holds
 *   offset  0: u64 counter (the "header", written first)
 *   offset  8: u64 SEQ_MAGIC
 *   offset 16: u64 page index
 *   offset SEQ_PAGE-8: u64 copy of the counter (the "trailer", written last)
 * in native byte order.  Each pass of the writer adds 1 to every page's
 * counter in page order, header then trailer.
 *
 * Valid states (N pages, some base value V, some 0 <= K < N):
 *   pages [0, K) hold V+1, pages [K, N) hold V   (K == 0: all pages hold V)
 * and page K may be torn: header V+1, trailer V (the writer was stopped
 * between the two stores).  Everything else is a failure.
 */
#ifndef WL_SEQPAGE_H
#define WL_SEQPAGE_H

#include <stddef.h>
#include <stdint.h>

#define SEQ_PAGE 4096u
#define SEQ_MAGIC 0x5345514e43504147ULL /* "SEQNCPAG" */
#define SEQ_OFF_COUNTER 0
#define SEQ_OFF_MAGIC 8
#define SEQ_OFF_INDEX 16
#define SEQ_OFF_TRAILER (SEQ_PAGE - 8)
#define SEQ_MAX_BAD 64 /* bad pages listed in detail */

/* Initialise page `index` at p with counter value v (consistent). */
void seq_page_init(void *p, uint64_t index, uint64_t v);
/* One increment step of the writer: header first, then trailer. */
void seq_page_increment(void *p);

enum seq_problem {
    SEQ_OK = 0,
    SEQ_ZEROED,         /* whole page reads as zeros */
    SEQ_BAD_MAGIC,      /* magic word wrong (garbage or foreign data) */
    SEQ_WRONG_INDEX,    /* a page that belongs to another offset */
    SEQ_TORN_BAD,       /* header/trailer differ by something other than +1 */
    SEQ_TORN_AWAY,      /* torn page, but not at the step */
    SEQ_WRONG_COUNTER,  /* consistent page with an unexpected counter */
};

struct seq_bad_page {
    uint64_t page;
    enum seq_problem problem;
    uint64_t counter, trailer, index, magic;
    uint64_t expected;  /* counter expected at this position */
};

struct seq_verdict {
    int pass;            /* 1 = valid state */
    uint64_t pages;
    uint64_t base;       /* V: value of the pages not yet incremented this pass */
    uint64_t step_at;    /* K: first page holding V (0 when all pages hold V) */
    int64_t torn_page;   /* index of the torn page at the step, or -1 */
    uint64_t nbad;       /* number of bad pages */
    size_t nlisted;      /* entries filled in bad[] (<= SEQ_MAX_BAD) */
    struct seq_bad_page bad[SEQ_MAX_BAD];
};

/*
 * Check npages pages at mem (pure function: reads memory, writes *v only).
 * Returns v->pass.
 */
int seq_check(const unsigned char *mem, uint64_t npages, struct seq_verdict *v);

/* One-line description of a bad page ("page 12: ... , expected ..."). */
void seq_describe(const struct seq_bad_page *b, uint64_t step_at, char *buf, size_t len);
const char *seq_problem_name(enum seq_problem p);

#endif
