#include "engine/sampler.h"

#include "engine/utf8.h"
#include "kernels/common.h"

#include <algorithm>

namespace dsk {

size_t complete_utf8_prefix(const std::string& s) { return s.size() - utf8::unfinished_tail(s); }

TextStream::TextStream(std::vector<std::string> stop_strings) : stops_(std::move(stop_strings)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string TextStream::release(size_t n) {
  // Callers cut either where the text ends or before an unfinished character, never inside a sequence the next
  // bytes could change, so the bytes before the cut read as they will in the whole text: each maximal invalid
  // subpart becomes one U+FFFD, and what is released is always valid UTF-8.
  std::string out = utf8::replace_invalid(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  text_ += out;
  return out;
}

std::string TextStream::push(const std::string& bytes) {
  if (stopped_) return {};
  pending_ += bytes;
  // A stop string can only start inside pending_: whatever could begin one was held back.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = release(first);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t len = std::min(s.size() - 1, pending_.size()); len > hold; --len)
      if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
  // Of the rest, an unfinished character at its end waits for the next token's bytes.
  const std::string ready = pending_.substr(0, pending_.size() - hold);
  return release(complete_utf8_prefix(ready));
}

std::string TextStream::finish() {
  if (stopped_) return {};
  return release(pending_.size());  // an unfinished character at the very end becomes U+FFFD
}

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::MaxTokens: return "max_new_tokens";
    case StopReason::EndOfText: return "end_of_text";
    case StopReason::StopString: return "stop_string";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

std::vector<Generated> generate(InferenceSession& session, const std::vector<std::vector<int32_t>>& prompts,
                                const GenerateOptions& o, const std::function<std::string(int32_t)>& token_bytes,
                                const std::function<void(int, const std::string&)>& on_text) {
  validate(o.sampling);
  DSK_CHECK(o.max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}", o.max_new_tokens);
  const int B = static_cast<int>(prompts.size()), V = session.vocab_size();
  std::vector<Generated> out(B);
  std::vector<TextStream> streams(B, TextStream(o.stop));
  std::vector<bool> done(B, false);
  int live = B;
  if (o.max_new_tokens == 0) return out;
  const std::vector<float>* logits = &session.prefill(prompts);
  std::vector<int32_t> next(B, 0);
  for (int step = 0; live > 0; ++step) {
    if (o.cancel && o.cancel->load()) {
      for (int b = 0; b < B; ++b)
        if (!done[b]) out[b].reason = StopReason::Cancelled;
      break;
    }
    for (int b = 0; b < B; ++b) {
      if (done[b]) continue;  // a finished row keeps feeding its last token (ignored) so the batch stays aligned
      const float u = sampling_uniform(o.seed, static_cast<uint64_t>(step), static_cast<uint32_t>(b));
      const int32_t t = sample_token(logits->data() + static_cast<size_t>(b) * V, V, o.sampling, u);
      next[b] = t;
      if (t == o.end_token) {
        out[b].reason = StopReason::EndOfText;
        done[b] = true;
        --live;
        continue;
      }
      out[b].tokens.push_back(t);
      if (token_bytes) {
        std::string piece = streams[b].push(token_bytes(t));
        if (!piece.empty() && on_text) on_text(b, piece);
        if (streams[b].stopped()) {
          out[b].reason = StopReason::StopString;
          done[b] = true;
          --live;
          continue;
        }
      }
      if (static_cast<int>(out[b].tokens.size()) >= o.max_new_tokens) {
        out[b].reason = StopReason::MaxTokens;
        done[b] = true;
        --live;
      }
    }
    if (live == 0) break;
    logits = &session.decode(next);
  }
  for (int b = 0; b < B; ++b) {
    if (token_bytes) {
      std::string rest = streams[b].finish();
      if (!rest.empty() && on_text) on_text(b, rest);
    }
    out[b].text = streams[b].text();
  }
  return out;
}

}  // namespace dsk
