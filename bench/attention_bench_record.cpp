#include "bench/attention_bench.h"

namespace dsk {

nlohmann::json attention_bench_record(const std::string& model, bool absorbed, const AttentionShape& s, float dropout,
                                      double forward_ms, double backward_ms, const std::string& unit) {
  const double visible = static_cast<double>(s.batch) * s.heads * s.q_len * (s.q_len + 1) / 2.0;
  const double fwd_flops = 2.0 * visible * (s.qk_dim + s.v_dim);
  const double bwd_flops = 2.0 * visible * (3.0 * s.qk_dim + 2.0 * s.v_dim);
  const double per_ms = unit == "tflops" ? 1e9 : 1e6;  // FLOP per ms in one unit
  return {{"model", model},
          {"form", absorbed ? "absorbed" : "explicit"},
          {"batch", s.batch},
          {"seq", s.q_len},
          {"heads", s.heads},
          {"kv_heads", s.kv_heads},
          {"qk_dim", s.qk_dim},
          {"v_dim", s.v_dim},
          {"dropout", dropout},
          {"forward_ms", forward_ms},
          {"backward_ms", backward_ms},
          {"forward_" + unit, fwd_flops / (forward_ms * per_ms)},
          {"backward_" + unit, bwd_flops / (backward_ms * per_ms)},
          {"tokens_per_s_fwd_bwd", s.batch * s.q_len / ((forward_ms + backward_ms) * 1e-3)}};
}

}  // namespace dsk
