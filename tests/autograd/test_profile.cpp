// The op profiler (autograd/profile.h) and the per-op times of `dsk bench train`.
#include "autograd/profile.h"
#include "bench/bench_train.h"
#include "engine/model.h"
#include "tests/train_testing.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <thread>

using namespace dsk;

namespace {
void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

const nlohmann::json& row_of(const nlohmann::json& rows, const std::string& op) {
  for (const auto& r : rows)
    if (r.at("op") == op) return r;
  FAIL("no row for " << op);
  return rows;
}
}  // namespace

TEST_CASE("OpProfiler charges each interval to the next mark's op, per step, most time first", "[profile]") {
  OpProfiler p(Backend::CPU);
  for (int step = 0; step < 2; ++step) {
    p.start();
    sleep_ms(4);
    p.mark("a", false);  // 4 ms of forward to a
    sleep_ms(1);
    p.mark("b", false);
    p.start();
    sleep_ms(12);  // nobody's: before a start mark
    p.start();
    sleep_ms(2);
    p.mark("b", true);  // 2 ms of backward to b
    p.collect();
  }
  const nlohmann::json rows = p.report(2);
  REQUIRE(rows.size() == 2);
  const auto& a = row_of(rows, "a");
  const auto& b = row_of(rows, "b");
  CHECK(a.at("calls").get<double>() == 1.0);  // per step
  CHECK(b.at("calls").get<double>() == 1.0);
  CHECK(a.at("forward_ms").get<double>() >= 4.0);
  CHECK(a.at("backward_ms").get<double>() == 0.0);
  CHECK(b.at("forward_ms").get<double>() >= 1.0);
  CHECK(b.at("backward_ms").get<double>() >= 2.0);
  CHECK(b.at("backward_ms").get<double>() < 12.0);  // the gap before the start marks is not charged
  CHECK(a.at("share").get<double>() + b.at("share").get<double>() == Approx(1.0));
  CHECK(rows[0].at("total_ms").get<double>() >= rows[1].at("total_ms").get<double>());
}

TEST_CASE("bench train: the op profile covers every node of a training step", "[profile]") {
  ModelConfig c = dsk::testing::tiny_model_config();
  c.vocab_size = 300;
  TrainBenchOptions o;
  o.batch = 2;
  o.steps = 1;
  o.warmup = 0;
  o.profile_steps = 2;
  const nlohmann::json j = bench_train(c, Backend::CPU, o);
  const nlohmann::json& rows = j.at("ops");
  REQUIRE(j.at("profile_steps") == 2);

  // The nodes one training step records, by op name.
  Model m(c, Backend::CPU);
  Arena arena(Backend::CPU, 64 << 20, "activation");
  std::vector<int32_t> ids(2 * c.context_length, 7);
  Tensor tokens(ids.data(), {2, c.context_length}, DType::I32);
  Tape tape(arena, Backend::CPU);
  tape.training = true;
  m.forward(tape, tokens, tokens);
  std::map<std::string, double> nodes;
  for (const std::string& op : tape.node_ops()) nodes[op] += 1;

  // Labels are "op (shape)": per op, the calls per step add up to the nodes, and each op took time.
  std::map<std::string, double> calls, time, backward;
  double share = 0;
  for (const auto& r : rows) {
    const std::string label = r.at("op");
    const std::string op = label.substr(0, label.find(' '));
    calls[op] += r.at("calls").get<double>();
    time[op] += r.at("total_ms").get<double>();
    backward[op] += r.at("backward_ms").get<double>();
    share += r.at("share").get<double>();
    CHECK(r.at("forward_ms").get<double>() >= 0.0);
    CHECK(r.at("backward_ms").get<double>() >= 0.0);
  }
  CHECK(calls == nodes);
  for (const auto& [op, ms] : time) {
    INFO(op);
    CHECK(ms > 0.0);
  }
  CHECK(share == Approx(1.0));
  for (const char* op : {"linear", "attention", "expert_ffn", "layernorm"}) {
    INFO(op);
    CHECK(backward[op] > 0.0);  // the backward closures are timed too
  }
  // The tied LM head is a linear of its own, told apart by its output width.
  CHECK(row_of(rows, "linear (2, 16, 300)").at("calls").get<double>() == 1.0);
}
