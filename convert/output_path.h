/* output_path.h - where q3convert may write, decided before any work is done.
 * The writer renames a finished temp file over the output path, and rename replaces
 * whatever is there: a FIFO, a socket, a device node (as root, -o /dev/null would
 * destroy the system's device), or one of the converter's own inputs, whichever name
 * reaches it (the same path, a symlink, a hard link, another path to the folder).
 * So an existing output must be a regular file, and not the same file (device and
 * inode) as any input. */
#ifndef Q3_OUTPUT_PATH_H
#define Q3_OUTPUT_PATH_H

#include <stddef.h>
#include "../format/q3_format.h"

/* out is refused when it is empty, exists as anything but a regular file, or is the
 * same file as one of the n inputs (inputs that do not exist are skipped). A path
 * that cannot be examined (a missing folder, no permission) is left for the writer
 * to report when it creates its temp file. */
int q3_check_output_path(const char *out, const char *const *inputs, size_t n, q3_err *err);
/* The same against the inputs of checkpoint folder hf_dir: the files named in
 * hf_files.h and every *.safetensors file in it. */
int q3_check_output_for_checkpoint(const char *out, const char *hf_dir, q3_err *err);

#endif
