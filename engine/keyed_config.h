#pragma once
// The machinery shared by ModelConfig and TrainConfig: each config lists its keys once, in a visitor
//   template <class C, class F> static void visit(C& c, F&& f) { f("lr", c.lr); ... }
// and gets JSON output, key lookup and checked JSON input (unknown keys and wrong types name the key) from here.
#include "kernels/common.h"

#include <nlohmann/json.hpp>

#include <limits>
#include <string>
#include <type_traits>

namespace dsk::keyed {

// Whether a JSON integer is in T's range (a plain get<T> wraps 2147483648 to a negative int).
template <class T>
bool fits_integer(const nlohmann::json& v) {
  using Limits = std::numeric_limits<T>;
  if (v.is_number_unsigned()) return v.get<unsigned long long>() <= static_cast<unsigned long long>(Limits::max());
  const long long x = v.get<long long>();
  if (x < 0) return std::is_signed_v<T> && x >= static_cast<long long>(Limits::min());
  return static_cast<unsigned long long>(x) <= static_cast<unsigned long long>(Limits::max());
}

// Reads one value of the field's type; `what` names the config in messages ("config key", "training key").
template <class T>
void read_value(const nlohmann::json& v, const char* what, const std::string& key, T& out) {
  auto bad = [&](const char* expected) {
    throw Error(fmt::format("{} '{}' must be {}, got {}", what, key, expected, v.dump()));
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) bad("true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) bad("an integer");
    if (!fits_integer<T>(v)) bad(fmt::format("an integer from {} to {}", std::numeric_limits<T>::min(),
                                             std::numeric_limits<T>::max()).c_str());
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) bad("a number");
  } else {
    if (!v.is_string()) bad("a string");
  }
  out = v.get<T>();
}

template <class C>
nlohmann::json to_json(const C& config) {
  nlohmann::json j;
  C copy = config;
  C::visit(copy, [&](const char* key, auto& v) {
    // Floats are written with their shortest round-trip text ("0.1", not 0.10000000149011612).
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, float>)
      j[key] = std::stod(fmt::format("{}", v));
    else
      j[key] = v;
  });
  return j;
}

template <class C>
bool has_key(const C& config, const std::string& key) {
  bool found = false;
  C copy = config;
  C::visit(copy, [&](const char* k, auto&) { found = found || key == k; });
  return found;
}

template <class C>
void update_from_json(C& config, const nlohmann::json& j, const char* what) {
  if (!j.is_object()) throw Error(fmt::format("the {}s must be a JSON object, not {}", what, j.type_name()));
  for (const auto& [key, value] : j.items()) {
    if (!has_key(config, key)) throw Error(fmt::format("unknown {} '{}'", what, key));
    C::visit(config, [&](const char* k, auto& field) {
      if (key == k) read_value(value, what, key, field);
    });
  }
}

// key=value from a command line: the value parsed as JSON if it is JSON ("0.1", "true", "\"absorbed\""), else
// taken as a bare-word string (absorbed, 3xtf32).
template <class C>
void set(C& config, const std::string& key, const std::string& value, const char* what) {
  nlohmann::json v = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) v = value;
  update_from_json(config, nlohmann::json{{key, v}}, what);
}

}  // namespace dsk::keyed
