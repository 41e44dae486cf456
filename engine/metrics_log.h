#pragma once
// A run's metrics.jsonl: one JSON object per line, flushed as written, so a crash loses at most the line being
// written. Opened for a run that continues from a checkpoint at step S, it first drops what the run will log
// again: the records after S (a run killed after its last checkpoint had logged steps it never saved, which the
// resumed run repeats) and a last line cut by the kill (appending to it would glue the next record on).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>

namespace dsk {

class MetricsLog {
 public:
  // `resume_step`: the step the run continues from (0 for a new run).
  MetricsLog(const std::string& path, int64_t resume_step);
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
};

// The records of metrics.jsonl at `path` are in step order; cuts the file after the last complete record whose
// "step" is at most `step` (reading only as much of its end as that needs). Exposed for tests.
void truncate_metrics_after(const std::string& path, int64_t step);

}  // namespace dsk
