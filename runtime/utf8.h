/* utf8.h - UTF-8 helpers shared by the tokenizer and the decoder (internal). */
#ifndef Q3_UTF8_H
#define Q3_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include "../include/q3.h" /* q3_utf8_seq: public, for programs that show bytes themselves */

/* in -> out with U+FFFD for each invalid subpart; out needs 3 * n bytes. Returns bytes written. */
size_t q3_utf8_lossy(const uint8_t *in, size_t n, char *out);

#endif
