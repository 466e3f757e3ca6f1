/* nofsync.so — LD_PRELOAD shim for `make bench` only: fsync/fdatasync return 0
 * without flushing, so `anvil convert` can be timed like a plain `cp` (which
 * leaves its output in the page cache). Never used outside the benchmark. */
int fsync(int fd) { (void)fd; return 0; }
int fdatasync(int fd) { (void)fd; return 0; }
