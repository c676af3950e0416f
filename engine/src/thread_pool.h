// A fixed pool of worker threads for data-parallel loops in the CPU backend.
//
// parallel_for(n, fn) splits [0, n) into contiguous chunks, one per thread (the caller's thread takes
// the first), and returns when all are done. One loop runs at a time per pool; the pool is owned by a
// Session's CPU state, so concurrent sessions never share one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace wkv {

class ThreadPool {
 public:
  // n_threads <= 0 → std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(begin, end) over disjoint chunks covering [0, n). Chunks are multiples of `grain` (except the
  // last). Exceptions thrown by fn are rethrown on the calling thread (the first one wins).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker(int index);

  int n_threads_ = 1;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace wkv
