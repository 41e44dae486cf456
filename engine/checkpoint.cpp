#include "engine/checkpoint.h"

#include "engine/folder_replace.h"
#include "engine/read_file.h"
#include "engine/safetensors.h"
#include "kernels/device.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace dsk {

namespace {

constexpr int kCheckpointVersion = 1;

// Host copy of one parameter-arena section slice (values, m or v) of parameter i.
std::vector<float> to_host(const Model& m, const float* section_base, const ParamInfo& p) {
  std::vector<float> out(static_cast<size_t>(p.numel));
  const float* src = section_base + p.offset;
  if (m.device() == Backend::CPU)
    std::memcpy(out.data(), src, out.size() * sizeof(float));
  else
    cuda::copy_to_host(out.data(), src, out.size() * sizeof(float));
  return out;
}

void from_host(Model& m, float* section_base, const ParamInfo& p, const std::vector<float>& v) {
  float* dst = section_base + p.offset;
  if (m.device() == Backend::CPU)
    std::memcpy(dst, v.data(), v.size() * sizeof(float));
  else
    cuda::copy_to_device(dst, v.data(), v.size() * sizeof(float));
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.flush();
  if (!f) throw Error(fmt::format("cannot write {} (disk full?)", path.string()));
}

SafeTensor tensor_of(const std::vector<int64_t>& shape, const std::vector<float>& v) { return f32_tensor(shape, v); }

// Reads a safetensors tensor that must exist with exactly this shape and finite values (training never saves a
// NaN or Inf: it stops first, so one in a file means the file is damaged, and it would only surface later as a
// NaN loss or garbage text).
std::vector<float> expect(const SafeTensorsFile& f, const std::string& file, const std::string& name,
                          const std::vector<int64_t>& shape) {
  auto it = f.tensors.find(name);
  if (it == f.tensors.end()) throw Error(fmt::format("{}: missing tensor '{}'", file, name));
  if (it->second.shape != shape)
    throw Error(fmt::format("{}: tensor '{}' has shape [{}], the model expects [{}]", file, name,
                            fmt::join(it->second.shape, ", "), fmt::join(shape, ", ")));
  std::vector<float> values = as_floats(it->second);
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw Error(fmt::format("{}: tensor '{}' holds {} at element {}: the file is damaged", file, name, values[i], i));
  return values;
}

}  // namespace

void save_checkpoint(const std::string& dir, const Model& m, const nlohmann::json& train_config,
                     const TrainerState* state) {
  FolderReplace out{fs::path(dir)};  // an existing checkpoint of this name is replaced only by a complete one
  const fs::path& tmp = out.dir();
  try {
    const ParamStore& ps = m.params();
    SafeTensorsFile weights;
    weights.metadata["format"] = "pt";
    weights.metadata["dsk_version"] = DSK_VERSION;
    for (const ParamInfo& p : ps.infos()) weights.tensors[p.name] = tensor_of(p.shape, to_host(m, ps.values(), p));
    write_safetensors((tmp / "model.safetensors").string(), weights);

    nlohmann::json cfg = {{"format", "dsk-checkpoint"},
                          {"version", kCheckpointVersion},
                          {"dsk_version", DSK_VERSION},
                          {"model", m.config().to_json()},
                          {"train", train_config}};
    write_text(tmp / "config.json", cfg.dump(2) + "\n");

    if (state) {
      SafeTensorsFile st;
      for (const ParamInfo& p : ps.infos()) {
        st.tensors["adam_m." + p.name] = tensor_of(p.shape, to_host(m, ps.adam_m(), p));
        st.tensors["adam_v." + p.name] = tensor_of(p.shape, to_host(m, ps.adam_v(), p));
      }
      nlohmann::json meta = {{"step", state->step},
                             {"loader_seed", state->loader.seed},
                             {"loader_cursor", state->loader.cursor},
                             {"seed", state->seed},
                             {"best_val_loss", std::isfinite(state->best_val_loss) ? nlohmann::json(state->best_val_loss)
                                                                                     : nlohmann::json(nullptr)},
                             {"tokens_seen", state->tokens_seen},
                             {"elapsed_s", state->elapsed_s}};
      st.metadata["trainer_state"] = meta.dump();
      st.metadata["version"] = std::to_string(kCheckpointVersion);
      write_safetensors((tmp / "trainer_state.safetensors").string(), st);
    }
    out.commit();
  } catch (const fs::filesystem_error& e) {
    throw Error(fmt::format("cannot save checkpoint {}: {}", dir, e.code().message()));
  }
}

std::string resolve_checkpoint(const std::string& path) {
  const fs::path p(path);
  if (!fs::exists(p)) throw Error(fmt::format("no such model: {}", path));
  // A checkpoint is a folder; naming its weights file instead is an easy slip (`--model run/best/model.safetensors`).
  if (!fs::is_directory(p))
    throw Error(fmt::format("{} is a file; --model takes a run folder or a checkpoint folder (the one holding "
                            "model.safetensors)", path));
  if (fs::exists(p / "model.safetensors")) return p.string();
  if (fs::exists(p / "best" / "model.safetensors")) return (p / "best").string();
  std::vector<std::string> steps;
  if (fs::is_directory(p / "checkpoints"))
    for (const auto& e : fs::directory_iterator(p / "checkpoints"))
      if (e.path().filename().string().rfind("step_", 0) == 0 && fs::exists(e.path() / "model.safetensors"))
        steps.push_back(e.path().string());
  if (steps.empty()) throw Error(fmt::format("{} holds no checkpoint (model.safetensors)", path));
  std::sort(steps.begin(), steps.end());  // step_%08d names sort by step
  return steps.back();
}

nlohmann::json read_checkpoint_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw Error(fmt::format("missing {}", path));
  const nlohmann::json j = nlohmann::json::parse(read_file(path, "checkpoint config"), nullptr, false);
  if (!j.is_object()) throw Error(fmt::format("{} is not valid JSON", path));
  if (j.value("format", "") != "dsk-checkpoint") throw Error(fmt::format("{} is not a dsk checkpoint config", path));
  if (j.value("version", 0) != kCheckpointVersion)
    throw Error(fmt::format("{}: checkpoint version {} is not supported (this dsk reads {})", path,
                            j.value("version", 0), kCheckpointVersion));
  if (!j.contains("model")) throw Error(fmt::format("{}: no \"model\" section", path));
  return j;
}

ModelConfig checkpoint_model_config(const std::string& dir) {
  ModelConfig c;
  c.update_from_json(read_checkpoint_config(dir).at("model"));
  c.validate();
  return c;
}

void load_weights(const std::string& dir, Model& m) {
  const std::string file = (fs::path(dir) / "model.safetensors").string();
  SafeTensorsFile f = read_safetensors(file);
  ParamStore& ps = m.params();
  for (const ParamInfo& p : ps.infos()) from_host(m, ps.values(), p, expect(f, file, p.name, p.shape));
  for (const auto& [name, t] : f.tensors)
    if (!ps.contains(name)) throw Error(fmt::format("{}: unexpected tensor '{}' for this model", file, name));
}

std::unique_ptr<Model> load_model(const std::string& run_or_checkpoint, Backend device) {
  const std::string dir = resolve_checkpoint(run_or_checkpoint);
  auto m = std::make_unique<Model>(checkpoint_model_config(dir), device);
  load_weights(dir, *m);
  return m;
}

TrainerState load_trainer_state(const std::string& dir, Model& m) {
  const std::string file = (fs::path(dir) / "trainer_state.safetensors").string();
  if (!fs::exists(file)) throw Error(fmt::format("{} has no trainer state: it cannot resume training", dir));
  SafeTensorsFile f = read_safetensors(file);
  ParamStore& ps = m.params();
  for (const ParamInfo& p : ps.infos()) {
    from_host(m, ps.adam_m(), p, expect(f, file, "adam_m." + p.name, p.shape));
    from_host(m, ps.adam_v(), p, expect(f, file, "adam_v." + p.name, p.shape));
  }
  auto it = f.metadata.find("trainer_state");
  if (it == f.metadata.end()) throw Error(fmt::format("{}: missing trainer_state metadata", file));
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, false);
  if (j.is_discarded()) throw Error(fmt::format("{}: trainer_state metadata is not valid JSON", file));
  TrainerState s;
  try {
    s.step = j.at("step").get<int64_t>();
    s.loader.seed = j.at("loader_seed").get<uint64_t>();
    s.loader.cursor = j.at("loader_cursor").get<uint64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.best_val_loss = j.at("best_val_loss").is_null() ? std::numeric_limits<double>::infinity()
                                                       : j.at("best_val_loss").get<double>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    s.elapsed_s = j.at("elapsed_s").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: bad trainer_state metadata ({})", file, e.what()));
  }
  return s;
}

}  // namespace dsk
