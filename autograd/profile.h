#pragma once
// Where a training step's time goes, op by op (the "ops" of `dsk bench train`).
//
// A Tape with a profiler attached marks the end of every op's forward (when the op records its node) and the end
// of every node's backward. Each interval since the previous mark is charged to that node, labelled by its op and
// output shape ("linear (8, 256, 50257)" is the LM head): so the model's glue between ops, and ops that record no
// node (the MoE permutation), are charged to the next node's forward. On the GPU the marks are CUDA events on
// dsk's stream, so the kernels stay queued asynchronously and the intervals are GPU time; on the CPU they are
// wall-clock times (the CPU kernels are synchronous).
#include "kernels/backend.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace dsk {

class OpProfiler {
 public:
  explicit OpProfiler(Backend device) : device_(device) {}
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // A reference mark that charges nothing: before a step's forward, and before its backward.
  void start();
  // Charges the time since the previous mark to `label`'s forward or backward.
  void mark(const std::string& label, bool backward);
  // Turns the pending marks into times; on the GPU call it after the device is idle (cuda::synchronize()).
  void collect();

  // Per step over `steps` profiled steps, the ops with the most time first:
  // [{"op", "calls", "forward_ms", "backward_ms", "total_ms", "share"}] (share: of the sum over all ops).
  nlohmann::json report(int steps) const;

 private:
  struct Mark {
    std::string label;  // empty: a start mark
    bool backward = false;
    void* event = nullptr;  // GPU
    std::chrono::steady_clock::time_point time;  // CPU
  };
  struct Totals {
    int64_t calls = 0;
    double forward_ms = 0, backward_ms = 0;
  };
  Backend device_;
  std::vector<Mark> pending_;
  std::map<std::string, Totals> totals_;
};

}  // namespace dsk
