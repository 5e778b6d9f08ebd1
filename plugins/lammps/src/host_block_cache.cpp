/* The host block cache of host_block_cache.h. */

#include "host_block_cache.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

namespace MLFF {

namespace {

constexpr std::size_t MIN_CACHED_BYTES = std::size_t(1) << 20;    // 1 MiB
constexpr std::uint8_t PRIORITY = 1;    // above torch's default CPU allocator (0)
// idle blocks kept, as a multiple of the peak of live blocks: a step's forward and backward
// passes use blocks of different sizes, so 1.0 kept too few (92 % reused after the first
// step on 32k waters, against 100 % with 1.5; the same peak resident memory, 4.2 GB)
constexpr double IDLE_LIMIT = 1.5;

// n >= 1 MiB rounded up to a multiple of 2^(floor(log2 n) - 3): 8 size classes per power of 2
std::size_t host_size_class(std::size_t n)
{
  int top = 63 - __builtin_clzll((unsigned long long) n);
  const std::size_t unit = std::size_t(1) << std::max(top - 3, 0);
  return (n + unit - 1) / unit * unit;
}

struct Block {
  void *data;
  std::size_t bytes;    // its size class
};

class BlockCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t n) override
  {
    if (n < MIN_CACHED_BYTES) return fallback_->allocate(n);
    const std::size_t want = host_size_class(n);
    Block *block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.requests++;
      // the smallest idle block that fits and wastes at most a quarter of the request
      auto found = idle_.lower_bound(want);
      if (found != idle_.end() && found->first <= want + want / 4) {
        block = found->second.back();
        found->second.pop_back();
        if (found->second.empty()) idle_.erase(found);
        stats_.idle_bytes -= block->bytes;
        stats_.reused++;
      }
      live_bytes_ += block ? block->bytes : want;
      stats_.peak_live_bytes = std::max(stats_.peak_live_bytes, live_bytes_);
    }
    if (!block) block = new Block{c10::alloc_cpu(want), want};
    return {block->data, block, &BlockCache::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void *dest, const void *src, std::size_t count) const override
  {
    default_copy_data(dest, src, count);
  }

  void acquire()
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (users_++ > 0) return;
    fallback_ = c10::GetCPUAllocator();
    installed_ = true;
    c10::SetCPUAllocator(this, PRIORITY);
  }

  void release()
  {
    std::vector<Block *> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (users_ == 0 || --users_ > 0) return;
      c10::SetCPUAllocator(fallback_, PRIORITY);
      installed_ = false;
      for (auto &entry : idle_) freed.insert(freed.end(), entry.second.begin(), entry.second.end());
      idle_.clear();
      stats_ = HostCacheStats();
      live_bytes_ = 0;
    }
    for (Block *block : freed) destroy(block);
  }

  HostCacheStats stats()
  {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  static BlockCache &instance()
  {
    // never destroyed: tensors may outlive every pair style and still call give_back
    static BlockCache *cache = new BlockCache();
    return *cache;
  }

 private:
  static void give_back(void *context)
  {
    instance().take(static_cast<Block *>(context));
  }

  void take(Block *block)
  {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_bytes_ -= std::min(live_bytes_, block->bytes);
      if (installed_ && stats_.idle_bytes + block->bytes <= IDLE_LIMIT * stats_.peak_live_bytes) {
        idle_[block->bytes].push_back(block);
        stats_.idle_bytes += block->bytes;
        return;
      }
    }
    destroy(block);
  }

  static void destroy(Block *block)
  {
    c10::free_cpu(block->data);
    delete block;
  }

  std::mutex mutex_;
  c10::Allocator *fallback_ = nullptr;
  bool installed_ = false;
  int users_ = 0;
  std::map<std::size_t, std::vector<Block *>> idle_;    // size class -> idle blocks
  std::size_t live_bytes_ = 0;
  HostCacheStats stats_;
};

}    // namespace

void acquire_host_block_cache() { BlockCache::instance().acquire(); }

void release_host_block_cache() { BlockCache::instance().release(); }

HostCacheStats host_block_cache_stats() { return BlockCache::instance().stats(); }

}    // namespace MLFF
