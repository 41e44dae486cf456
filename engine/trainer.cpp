#include "engine/trainer.h"

#include "engine/checkpoint.h"
#include "engine/data.h"
#include "engine/evaluate.h"
#include "engine/memory_plan.h"
#include "engine/metrics_log.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "engine/paths.h"
#include "engine/run_folder.h"
#include "kernels/device.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

namespace fs = std::filesystem;

namespace dsk {

namespace {

using Clock = std::chrono::steady_clock;

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

float read_scalar(const Tensor& t) {
  float v = 0;
  if (t.device == Backend::CPU)
    v = *t.f32();
  else
    cuda::copy_to_host(&v, t.data, sizeof(float));
  return v;
}

std::vector<float> read_vector(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.device == Backend::CPU)
    std::memcpy(v.data(), t.data, t.bytes());
  else
    cuda::copy_to_host(v.data(), t.data, t.bytes());
  return v;
}

// Keeps the newest `keep` step_* folders of checkpoints/.
void prune_checkpoints(const fs::path& dir, int keep) {
  std::vector<fs::path> steps;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("step_", 0) == 0 && is_dsk_checkpoint(e.path().string()))
      steps.push_back(e.path());  // (a user's folder named step_* is not dsk's to delete)
  std::sort(steps.begin(), steps.end());
  for (size_t i = 0; i + keep < steps.size(); ++i) fs::remove_all(steps[i]);
}

// Where the NaN stop sends the user: the newest checkpoint this run saved, else the one it resumed from.
std::string last_good_checkpoint(const std::string& saved, const std::string& resumed_from) {
  if (!saved.empty()) return "the last good checkpoint is " + saved;
  if (!resumed_from.empty()) return "the last good checkpoint is " + resumed_from + ", where this run started";
  return "no checkpoint was written yet";
}

}  // namespace

int64_t total_train_steps(const TrainConfig& c, int64_t windows_per_epoch) {
  if (c.max_steps > 0) return c.max_steps;
  const double per_step = static_cast<double>(c.batch_size) * c.grad_accum_steps;
  const double steps = std::ceil(c.epochs * windows_per_epoch / per_step);
  // (The step counter, the schedule and the checkpoints' step_NNNNNNNN names are 32-bit, as max_steps is.)
  if (!(steps <= std::numeric_limits<int32_t>::max()))
    throw Error(fmt::format("epochs {} is {:.3g} steps of this data, more than {}; lower epochs", c.epochs, steps,
                            std::numeric_limits<int32_t>::max()));
  return std::max<int64_t>(1, static_cast<int64_t>(steps));
}

std::string latest_checkpoint(const std::string& path) {
  const fs::path p(path);
  if (fs::exists(p / "trainer_state.safetensors")) return p.string();
  std::vector<std::string> steps;
  if (fs::is_directory(p / "checkpoints"))
    for (const auto& e : fs::directory_iterator(p / "checkpoints"))
      if (fs::exists(e.path() / "trainer_state.safetensors")) steps.push_back(e.path().string());
  if (steps.empty()) throw Error(fmt::format("{} holds no resumable checkpoint (trainer_state.safetensors)", path));
  std::sort(steps.begin(), steps.end());
  return steps.back();
}

TrainSummary run_training(const TrainRun& run) {
  ModelConfig mc = run.model;
  const TrainConfig& tc = run.train;
  if (tc.dropout >= 0) mc.drop_rate = tc.dropout;
  mc.validate();
  tc.validate_for(mc.context_length);
  const int B = tc.batch_size;
  const int T = tc.seq_len > 0 ? tc.seq_len : mc.context_length;

  // ---- data -------------------------------------------------------------------------------------------
  PreparedData data = open_prepared(run.data_dir);
  TokenShard train_shard(data.train_path), val_shard(data.val_path);
  if (train_shard.vocab_size() != mc.vocab_size)
    throw Error(fmt::format("the data was tokenized for vocab_size {}, the model has {}", train_shard.vocab_size(),
                            mc.vocab_size));
  if (train_shard.size() < static_cast<size_t>(T) + 1)
    throw Error(fmt::format("the training split has {} tokens, fewer than one window of {}", train_shard.size(), T + 1));
  DataLoader loader(train_shard, B, T, tc.seed, tc.data_stride);

  // ---- model, optimizer, state ------------------------------------------------------------------------
  if (run.device == Backend::CUDA) {
    cuda::set_tf32(tc.tf32);
    cuda::set_expert_math(*cuda::math_named(tc.expert_math));  // validated with the config
    cuda::set_attention_math(*cuda::math_named(tc.attention_math));
  }
  Model model(mc, run.device);
  TrainerState state;
  state.seed = tc.seed;
  state.loader = loader.state();
  if (!run.resume_from.empty()) {
    load_weights(run.resume_from, model);
    state = load_trainer_state(run.resume_from, model);
    loader.restore(state.loader);
  } else {
    model.init_weights(tc.seed);
  }
  AdamW opt(model.params(), tc);
  const int64_t total_steps = total_train_steps(tc, loader.windows_per_epoch());
  if (tc.warmup_steps >= total_steps)  // (max_steps is checked with the config; epochs give the count only here)
    throw Error(fmt::format("warmup_steps {} must be less than the run's {} steps (epochs {} of this data)",
                            tc.warmup_steps, total_steps, tc.epochs));
  if (state.step >= total_steps)
    throw Error(fmt::format("the checkpoint is at step {} and the run has {} steps: nothing to do (raise max_steps)",
                            state.step, total_steps));

  // ---- memory -----------------------------------------------------------------------------------------
  MemoryPlan plan = plan_memory(mc, B, T, /*training=*/true);
  Arena arena(run.device, plan.activation_bytes, "activation");
  const int eval_batch = B;
  Arena eval_arena(run.device, eval_arena_bytes(mc, eval_batch, T), "evaluation");
  Arena io(run.device, 2 * (static_cast<size_t>(B) * T * sizeof(int32_t) + Arena::kAlign), "batch");
  Tensor tokens = io.alloc({B, T}, DType::I32), targets = io.alloc({B, T}, DType::I32);
  std::vector<int32_t> host_in(static_cast<size_t>(B) * T), host_tg(host_in.size());

  // ---- run folder -------------------------------------------------------------------------------------
  const fs::path out(run.out_dir);
  if (run.replace_run) {
    // A Ctrl-C during the setup above means "don't": the old run stays.
    if (run.stop_requested && run.stop_requested())
      throw Error(fmt::format("stopped before the run started; the run in {} is unchanged", out.string()));
    clear_run_folder(out.string());
  }
  fs::create_directories(out / "checkpoints");
  remove_interrupted_saves(out.string());
  const nlohmann::json model_json = mc.to_json(), train_json = tc.to_json();
  {
    // The data folder as an absolute path, so that `dsk train --resume` finds it from any working directory.
    nlohmann::json cfg = {{"format", "dsk-run"}, {"model", model_json}, {"train", train_json},
                          {"data", absolute_path(data.dir).string()},
                          {"device", backend_name(run.device)}, {"dsk_version", DSK_VERSION}};
    // (The data path is the user's bytes, not always UTF-8: written with U+FFFD rather than failing the run.)
    std::ofstream(out / "config.json") << cfg.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  MetricsLog metrics((out / "metrics.jsonl").string(), state.step);
  // The resolved config, once setup has passed: an error in the data, model or memory stays the only line.
  std::fprintf(run.log, "config: %s\n", nlohmann::json({{"model", model_json}, {"train", train_json}}).dump().c_str());
  std::fprintf(run.log, "training %lld steps of %d × %d tokens (%d accumulation) on %s; parameters %.1f MiB, "
               "activations %.1f MiB; run folder %s\n",
               static_cast<long long>(total_steps), B, T, tc.grad_accum_steps, backend_name(run.device),
               plan.parameter_bytes / 1048576.0, plan.activation_bytes / 1048576.0, out.string().c_str());
  if (run.device == Backend::CUDA) {
    // What auto resolved to on this GPU, so a log says which arithmetic produced its losses (and a forced
    // tensor-core choice on a GPU without them fails here, before any step).
    std::fprintf(run.log, "CUDA arithmetic: cuBLAS GEMMs %s, expert GEMMs %s, attention %s\n",
                 tc.tf32 && cuda::tf32_tensor_cores() ? "tf32" : "fp32",
                 cuda::math_name(cuda::running_math(cuda::expert_math(), "expert_math")),
                 cuda::math_name(cuda::running_math(cuda::attention_math(), "attention_math")));
  }
  if (state.step > 0)
    std::fprintf(run.log, "resuming from %s at step %lld\n", run.resume_from.c_str(), static_cast<long long>(state.step));

  TrainSummary summary;
  summary.total_steps = total_steps;
  summary.best_val_loss = state.best_val_loss;

  auto save = [&](const fs::path& dir) {
    save_checkpoint(dir.string(), model, train_json, &state);
    return dir.string();
  };
  auto evaluate_val = [&]() {
    EvalResult e = evaluate(model, val_shard.tokens(), val_shard.size(), T, eval_batch, tc.eval_batches * eval_batch,
                            eval_arena);
    metrics.write({{"type", "eval"}, {"step", state.step}, {"val_loss", e.loss}, {"val_perplexity", e.perplexity},
                   {"val_tokens", e.tokens}});
    summary.last_val_loss = e.loss;
    if (e.loss < state.best_val_loss) {
      state.best_val_loss = e.loss;
      summary.best_val_loss = e.loss;
      summary.best_checkpoint = save(out / "best");
    }
    return e.loss;
  };

  const auto start = Clock::now();
  const double elapsed_before = state.elapsed_s;
  double window_tokens = 0, window_seconds = 0, last_val = std::nan("");
  int64_t last_val_step = 0;
  while (state.step < total_steps) {
    const auto t0 = Clock::now();
    model.params().zero_grad();
    double loss_sum = 0, aux_sum = 0;
    std::vector<Var*> load_vars;
    for (int micro = 0; micro < tc.grad_accum_steps; ++micro) {
      loader.next_batch(host_in.data(), host_tg.data());
      if (run.device == Backend::CPU) {
        std::memcpy(tokens.data, host_in.data(), tokens.bytes());
        std::memcpy(targets.data, host_tg.data(), targets.bytes());
      } else {
        cuda::copy_to_device(tokens.data, host_in.data(), tokens.bytes());
        cuda::copy_to_device(targets.data, host_tg.data(), targets.bytes());
      }
      arena.reset();
      Tape tape(arena, run.device);
      tape.training = true;
      tape.seed = tc.seed;
      tape.step = static_cast<uint64_t>(state.step) * tc.grad_accum_steps + micro;  // every micro-batch its own masks
      ForwardResult r = model.forward(tape, tokens, targets, 1.0f / tc.grad_accum_steps);
      tape.backward(r.loss_terms);
      loss_sum += read_scalar(r.loss->value);
      aux_sum += read_scalar(r.aux->value);
      if (micro + 1 == tc.grad_accum_steps && (state.step + 1) % tc.log_every == 0) {
        nlohmann::json layers = nlohmann::json::array(), ratio = nlohmann::json::array();
        for (Var* v : r.expert_load) {
          std::vector<float> f = read_vector(v->value);
          layers.push_back(f);
          ratio.push_back(*std::max_element(f.begin(), f.end()) * f.size());  // max / mean (mean = 1/E)
        }
        metrics.write({{"type", "expert_load"}, {"step", state.step + 1}, {"layers", layers}, {"max_over_mean", ratio}});
      }
    }
    const double loss = loss_sum / tc.grad_accum_steps, aux = aux_sum / tc.grad_accum_steps;
    if (!std::isfinite(loss) || !std::isfinite(aux)) {
      // (fmt spells a NaN "nan" or "-nan"; the aux loss can go bad while the loss is still finite)
      const bool bad_loss = !std::isfinite(loss);
      const double bad = bad_loss ? loss : aux;
      throw Error(fmt::format("the {} became {} at step {}; stopping ({}); try a lower lr or grad_clip",
                              bad_loss ? "loss" : "aux loss", std::isnan(bad) ? "NaN" : fmt::format("{}", bad),
                              state.step + 1, last_good_checkpoint(summary.last_checkpoint, run.resume_from)));
    }
    const float lr = learning_rate(tc, static_cast<int>(state.step), static_cast<int>(total_steps));
    const float grad_norm = opt.step(static_cast<int>(state.step) + 1, lr);
    if (run.device == Backend::CUDA) cuda::synchronize();
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    state.step += 1;
    state.tokens_seen += static_cast<int64_t>(B) * T * tc.grad_accum_steps;
    state.loader = loader.state();
    state.elapsed_s = elapsed_before + std::chrono::duration<double>(Clock::now() - start).count();
    window_tokens += static_cast<double>(B) * T * tc.grad_accum_steps;
    window_seconds += dt;
    const double tok_s = window_tokens / window_seconds;
    summary.last_loss = loss;
    summary.tokens_per_s = tok_s;
    metrics.write({{"type", "train"}, {"step", state.step}, {"loss", loss}, {"aux_loss", aux}, {"lr", lr},
                   {"grad_norm", grad_norm}, {"tokens_per_s", B * T * tc.grad_accum_steps / dt},
                   {"elapsed_s", state.elapsed_s}, {"epoch", loader.epoch()}});

    const bool last = state.step == total_steps;
    if ((tc.eval_every > 0 && state.step % tc.eval_every == 0) || last) {
      last_val = evaluate_val();
      last_val_step = state.step;
    }
    if ((tc.save_every > 0 && state.step % tc.save_every == 0) || last) {
      summary.last_checkpoint = save(out / "checkpoints" / step_dir_name(state.step));
      prune_checkpoints(out / "checkpoints", tc.keep_checkpoints);
    }

    const double eta = (total_steps - state.step) * (window_seconds / std::max(1.0, window_tokens)) * B * T *
                       tc.grad_accum_steps;
    // The latest validation loss; from an earlier step it says which, so it is not read as this step's.
    const std::string val = std::isnan(last_val)              ? ""
                            : last_val_step == state.step ? fmt::format(" | val {:.4f}", last_val)
                                                          : fmt::format(" | val {:.4f} (step {})", last_val, last_val_step);
    if (run.progress_line) {
      std::fprintf(run.log, "\rstep %lld/%lld | loss %.4f%s | %.0f tok/s | ETA %s   ", static_cast<long long>(state.step),
                   static_cast<long long>(total_steps), loss, val.c_str(), tok_s, format_duration(eta).c_str());
      std::fflush(run.log);
    } else if (state.step % tc.log_every == 0 || last || state.step == 1) {
      std::fprintf(run.log, "step %lld/%lld | loss %.4f | aux %.4f | lr %.2e | grad norm %.3f%s | %.0f tok/s | ETA %s\n",
                   static_cast<long long>(state.step), static_cast<long long>(total_steps), loss, aux, lr, grad_norm,
                   val.c_str(), tok_s, format_duration(eta).c_str());
    }
    if (state.step % tc.log_every == 0) window_tokens = window_seconds = 0;  // tok/s over the recent window

    if (!last && run.stop_requested && run.stop_requested()) {
      summary.last_checkpoint = save(out / "checkpoints" / step_dir_name(state.step));
      prune_checkpoints(out / "checkpoints", tc.keep_checkpoints);
      summary.stopped_early = true;
      break;
    }
  }
  if (run.progress_line) std::fputc('\n', run.log);
  summary.steps_done = state.step;
  return summary;
}

}  // namespace dsk
