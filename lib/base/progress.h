/* Progress bar on stderr, drawn only when stderr is a terminal (or SD_PROGRESS=1 forces it).
 * Looks like tqdm: "desc:  45%|#####     | 450/1000 [00:10<00:12, 44.9it/s, avr_loss=0.123]".
 * Redraws at most every 100 ms; log lines clear it first (base/log.c). One bar at a time. */
#ifndef SD_BASE_PROGRESS_H
#define SD_BASE_PROGRESS_H

#include <stdint.h>

typedef struct sd_progress {
    char desc[64];
    char postfix[128];
    int64_t total;     /* 0 = unknown */
    int64_t count;
    double t_start, t_last_draw;
    int enabled;
} sd_progress;

void sd_progress_begin(sd_progress *p, const char *desc, int64_t total);
void sd_progress_update(sd_progress *p, int64_t n);       /* count += n, redraw if due */
void sd_progress_postfix(sd_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sd_progress_end(sd_progress *p);                      /* final draw + newline */
/* Render the bar into buf (used for drawing and by tests). */
void sd_progress_format(const sd_progress *p, double now, int width, char *buf, int bufsize);
/* Erase the current bar line if one is shown (called before log output). */
void sd_progress_clear_line(void);
double sd_now(void);   /* monotonic seconds */

#endif
