/* A user's jq program (`--filter 'PROG'`) applied to each record, through libjq 1.6.
 *
 * Compile once with sd_jq_compile(), then sd_jq_run() per record: a filter may map a record
 * (`.caption |= ascii_downcase`), drop it (`select(.w > 512)` → no output), or emit several
 * (`., (.flip = true)`). A runtime error (`error("x")`, `.[0]` on an object, `halt_error`) is a
 * per-record error: the outputs produced before it are discarded.
 *
 * Sandboxing: `import`/`include` find no modules (the library path is empty), `input` and
 * `inputs` see no further inputs, `input_filename` is null, `debug` messages are dropped.
 * `$ENV`/`env` and `stderr` work as in jq. `error(null)` behaves like `empty` (a jq 1.6 quirk).
 *
 * Threads: libjq 1.6 is not thread-safe (a second thread using it crashes, jqlang/jq#2545; jv
 * refcounts are not atomic). Create, run and free every sd_jq on one thread — the thread that
 * reads and writes the records — and never share the jv values with other threads. */
#ifndef SD_IO_JQ_H
#define SD_IO_JQ_H

#include <jv.h>
#include <stddef.h>

typedef struct sd_jq sd_jq;

/* Compile `prog`. `args` (consumed) is an object {name: value} whose entries become $name, or
 * jv_null() for none. On failure returns SD_EUSAGE with every compile error in one message:
 * "jq filter: syntax error, unexpected ... at <top-level>, line 1: .a |"; SD_ENOMEM. */
int sd_jq_compile(const char *prog, jv args, sd_jq **out);
/* Outputs beyond this count make sd_jq_run fail (guards against `repeat(.)`); default 100000. */
void sd_jq_set_max_outputs(sd_jq *q, size_t max);
/* Run on `input` (consumed). On SD_OK *outputs is a jv array (caller owns it) of 0..n values,
 * in order. On a runtime error returns SD_EFORMAT with "jq filter: MESSAGE" (a non-string
 * error value is shown as JSON) and *outputs = jv_invalid(). */
int sd_jq_run(sd_jq *q, jv input, jv *outputs);
void sd_jq_free(sd_jq *q);

#endif
