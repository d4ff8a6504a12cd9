/* q3_err.c - one-line error messages. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "q3_format.h"

void q3_set_err(q3_err *err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    /* Messages quote names and keys from the input; a control byte there (a newline,
     * an escape sequence) must not break the message into lines or drive the terminal. */
    for (char *p = err->msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

int q3_err_name_file(q3_err *err, const char *path)
{
    if (!err) return -1;
    char what[sizeof err->msg];
    memcpy(what, err->msg, sizeof what);
    q3_set_err(err, "%s: %s", path, what);
    return -1;
}

int q3_finish_stdout(const char *prog, int rc)
{
    /* A full disk or a closed pipe shows up only when the buffer is flushed. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: writing standard output failed: %s\n", prog, strerror(errno ? errno : EIO));
        return rc ? rc : 1;
    }
    return rc;
}
