#include "thread_pool.h"

#include <algorithm>

namespace wkv {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  ranges_.resize(n_threads_);
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* job;
    std::pair<int64_t, int64_t> range;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      range = ranges_[index];
    }
    if (range.first < range.second) {
      try {
        (*job)(range.first, range.second);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int active = static_cast<int>(std::min<int64_t>(n_threads_, units));
  if (active <= 1) {
    fn(0, n);
    return;
  }
  // Balanced split of `units` grains over `active` threads.
  std::vector<std::pair<int64_t, int64_t>> ranges(n_threads_, {0, 0});
  int64_t begin_unit = 0;
  for (int t = 0; t < active; ++t) {
    const int64_t count = units / active + (t < units % active ? 1 : 0);
    ranges[t] = {std::min(n, begin_unit * grain), std::min(n, (begin_unit + count) * grain)};
    begin_unit += count;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    ranges_ = ranges;
    pending_ = n_threads_ - 1;
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  std::exception_ptr own_error;
  try {
    fn(ranges[0].first, ranges[0].second);
  } catch (...) {
    own_error = std::current_exception();
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
  if (own_error) std::rethrow_exception(own_error);
  if (error_) std::rethrow_exception(error_);
}

}  // namespace wkv
