#include "autograd/profile.h"

#include "kernels/device.h"

#include <algorithm>

namespace dsk {

OpProfiler::~OpProfiler() {
  for (Mark& m : pending_)
    if (m.event) cuda::destroy_marker(m.event);
}

void OpProfiler::start() { mark("", false); }

void OpProfiler::mark(const std::string& label, bool backward) {
  Mark m;
  m.label = label;
  m.backward = backward;
  if (device_ == Backend::CUDA)
    m.event = cuda::record_marker();
  else
    m.time = std::chrono::steady_clock::now();
  pending_.push_back(std::move(m));
}

void OpProfiler::collect() {
  for (size_t i = 1; i < pending_.size(); ++i) {
    const Mark &prev = pending_[i - 1], &m = pending_[i];
    if (m.label.empty()) continue;  // a start mark: the gap before it is nobody's
    const double ms = device_ == Backend::CUDA
                          ? cuda::marker_elapsed_ms(prev.event, m.event)
                          : std::chrono::duration<double, std::milli>(m.time - prev.time).count();
    Totals& t = totals_[m.label];
    (m.backward ? t.backward_ms : t.forward_ms) += ms;
    if (!m.backward) ++t.calls;
  }
  for (Mark& m : pending_)
    if (m.event) cuda::destroy_marker(m.event);
  pending_.clear();
}

nlohmann::json OpProfiler::report(int steps) const {
  double sum = 0;
  for (const auto& [label, t] : totals_) sum += t.forward_ms + t.backward_ms;
  std::vector<nlohmann::json> rows;
  const double per = 1.0 / std::max(steps, 1);
  for (const auto& [label, t] : totals_) {
    const double total = t.forward_ms + t.backward_ms;
    rows.push_back({{"op", label},
                    {"calls", static_cast<double>(t.calls) * per},
                    {"forward_ms", t.forward_ms * per},
                    {"backward_ms", t.backward_ms * per},
                    {"total_ms", total * per},
                    {"share", sum > 0 ? total / sum : 0.0}});
  }
  std::sort(rows.begin(), rows.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return a.at("total_ms").get<double>() > b.at("total_ms").get<double>();
  });
  return rows;
}

}  // namespace dsk
