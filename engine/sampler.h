#pragma once
// Text generation on top of the inference engine (engine/inference.h) and the sampling rule (engine/sampling.h):
// prefill the prompts, then sample / decode token by token until each row stops.
//
// A row stops at the end-of-text token (not part of its text), after max_new_tokens, when a stop string appears
// in its text (the text ends just before it), or when the cancel flag is raised (Ctrl-C in `dsk sample`).
#include "engine/inference.h"
#include "engine/sampling.h"

#include <atomic>
#include <functional>
#include <string>
#include <vector>

namespace dsk {

// Turns a stream of token bytes into printable text, always valid UTF-8: only complete characters are released (a
// character split across tokens waits for its last byte), invalid bytes become U+FFFD (one per maximal invalid
// subpart, like utf8::replace_invalid on the whole text), and any tail that could be the beginning of a stop string
// is held back until it is known not to be one. Once a stop string appears, nothing from it on is ever released.
class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop_strings = {});
  // Adds one token's bytes; returns the text that is now safe to print (may be empty).
  std::string push(const std::string& bytes);
  // End of generation: releases what was held back (an unfinished UTF-8 sequence becomes U+FFFD).
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }  // everything released so far

 private:
  std::string release(size_t n);
  std::vector<std::string> stops_;
  std::string pending_, text_;
  bool stopped_ = false;
};

// Length of s without its unfinished UTF-8 character at the end, if any (utf8::unfinished_tail): the part whose
// reading no later byte can change. Invalid bytes count as finished (they will read as U+FFFD whatever follows).
size_t complete_utf8_prefix(const std::string& s);

enum class StopReason { MaxTokens, EndOfText, StopString, Cancelled };
const char* stop_reason_name(StopReason r);

struct GenerateOptions {
  int max_new_tokens = 100;
  SamplingParams sampling;
  uint64_t seed = 1337;
  int32_t end_token = 50256;       // <|endoftext|>; -1: none
  std::vector<std::string> stop;   // stop strings (need token_bytes)
  const std::atomic<bool>* cancel = nullptr;  // checked before every token
};

struct Generated {
  std::vector<int32_t> tokens;  // new tokens (the end token excluded)
  std::string text;             // their text, cut before a stop string
  StopReason reason = StopReason::MaxTokens;
};

// token_bytes(id): the bytes of a token (tokenizer); may be empty when no text is wanted (then stop strings are
// not checked). on_text(row, piece): each piece of row's text as soon as it is printable; may be empty.
std::vector<Generated> generate(InferenceSession& session, const std::vector<std::vector<int32_t>>& prompts,
                                const GenerateOptions& options,
                                const std::function<std::string(int32_t)>& token_bytes = {},
                                const std::function<void(int, const std::string&)>& on_text = {});

}  // namespace dsk
