/* A block cache for the host (CPU) memory of large torch tensors, installed while a pair style
   mlff exists.

   Why: every MD step allocates the same large tensors again (edge features of a 32k-atom box
   are hundreds of MB). glibc serves allocations above its mmap threshold (at most 32 MiB) with a
   fresh mmap and returns them to the kernel on free, so every step the kernel zeroes those pages
   again on first touch: 45 % of a SchNet step on 32k waters (perf, clear_page_erms) against
   none at 1k atoms. This cache keeps freed blocks of 1 MiB or more and hands them out again.

   Sizes are rounded up to 8 classes per power of two; a request takes the smallest idle block
   that fits and is at most 1.25 times its size, so an edge count that drifts between steps
   still finds its blocks. Idle blocks are capped at 1.5 times the peak of live blocks (what
   one step needs: its forward and backward passes use blocks of different sizes). Smaller
   requests go to the allocator that was installed before (torch's default).

   The cache is torch's CPU allocator for the whole process (c10::SetCPUAllocator) from the
   first PairMLFF to the last one's destruction; then the previous allocator is restored and
   the idle blocks are freed (blocks still alive are freed when their tensors go). */

#ifndef LMP_MLFF_HOST_BLOCK_CACHE_H
#define LMP_MLFF_HOST_BLOCK_CACHE_H

#include <cstddef>
#include <cstdint>

namespace MLFF {

struct HostCacheStats {
  std::uint64_t requests = 0;      // allocations of >= 1 MiB since install
  std::uint64_t reused = 0;        // ... served from an idle block
  std::size_t peak_live_bytes = 0;
  std::size_t idle_bytes = 0;      // held now, not in use
};

// Reference-counted: the first acquire installs the cache, the last release removes it.
void acquire_host_block_cache();
void release_host_block_cache();
HostCacheStats host_block_cache_stats();

}    // namespace MLFF

#endif
