#include "wkv/summarize.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace wkv {
namespace {

// A piece of the document that is never cut inside a chunk: [begin, end), its tokens counted alone
// (an upper bound in practice: pieces counted alone pay the leading-space piece once each) and the
// kind of boundary at its end.
struct Unit {
  size_t begin = 0, end = 0;
  int tokens = 0;
  BoundaryKind end_kind = BoundaryKind::document;
};

int count_tokens(const Tokenizer& tok, std::string_view text, size_t b, size_t e) {
  if (e <= b) return 0;
  return static_cast<int>(tok.encode(text.substr(b, e - b), false).size());
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }
bool is_utf8_start(char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }

// The strongest boundary kind at byte offset p (0 < p < size): the text before p ends a paragraph
// (a blank line), a line, a sentence ([.!?] + whitespace), a word (whitespace), or nothing (a
// character boundary, or inside a character: returns document as "not a boundary").
BoundaryKind boundary_at(std::string_view t, size_t p) {
  if (p == 0 || p >= t.size()) return BoundaryKind::document;
  if (!is_utf8_start(t[p])) return BoundaryKind::document;  // never inside a UTF-8 sequence
  if (is_space(t[p])) return BoundaryKind::character;       // boundaries sit at the start of text
  // Walk back over the whitespace before p.
  size_t q = p;
  int newlines = 0;
  while (q > 0 && is_space(t[q - 1])) {
    if (t[q - 1] == '\n') ++newlines;
    --q;
  }
  if (q == p) return BoundaryKind::character;
  if (newlines >= 2) return BoundaryKind::paragraph;
  if (newlines == 1) return BoundaryKind::line;
  if (q > 0 && (t[q - 1] == '.' || t[q - 1] == '!' || t[q - 1] == '?')) return BoundaryKind::sentence;
  return BoundaryKind::word;
}

// Offsets in (lo, hi) whose boundary is at least as strong as `kind`.
std::vector<size_t> cuts_in(std::string_view t, size_t lo, size_t hi, BoundaryKind kind) {
  std::vector<size_t> out;
  for (size_t p = lo + 1; p < hi; ++p) {
    const BoundaryKind b = boundary_at(t, p);
    if (b != BoundaryKind::document && static_cast<int>(b) <= static_cast<int>(kind)) out.push_back(p);
  }
  return out;
}

BoundaryKind weaker(BoundaryKind k) { return static_cast<BoundaryKind>(static_cast<int>(k) + 1); }

// Appends units covering [lo, hi) with at most `budget` tokens each, cutting at `kind` boundaries
// first and at weaker ones only inside pieces that are still too large.
void split_range(std::string_view t, const Tokenizer& tok, size_t lo, size_t hi, BoundaryKind kind, int budget,
                 BoundaryKind end_kind, std::vector<Unit>& out) {
  const int n = count_tokens(tok, t, lo, hi);
  if (n <= budget) {
    out.push_back({lo, hi, n, end_kind});
    return;
  }
  if (kind == BoundaryKind::character) {
    // Longest prefixes that fit, found by bisection over character starts.
    size_t b = lo;
    while (b < hi) {
      size_t good = b, lo_s = b + 1, hi_s = hi;
      while (lo_s <= hi_s) {
        size_t mid = lo_s + (hi_s - lo_s) / 2;
        while (mid < hi && !is_utf8_start(t[mid])) ++mid;
        if (count_tokens(tok, t, b, mid) <= budget) {
          good = mid;
          lo_s = mid + 1;
        } else {
          if (mid == 0) break;
          hi_s = mid - 1;
        }
      }
      if (good == b) {  // one character over budget cannot happen for budget ≥ a few tokens
        good = b + 1;
        while (good < hi && !is_utf8_start(t[good])) ++good;
      }
      out.push_back({b, good, count_tokens(tok, t, b, good), good == hi ? end_kind : BoundaryKind::character});
      b = good;
    }
    return;
  }
  const std::vector<size_t> cuts = cuts_in(t, lo, hi, kind);
  if (cuts.empty()) {
    split_range(t, tok, lo, hi, weaker(kind), budget, end_kind, out);
    return;
  }
  size_t b = lo;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t e = i < cuts.size() ? cuts[i] : hi;
    split_range(t, tok, b, e, weaker(kind), budget, i < cuts.size() ? kind : end_kind, out);
    b = e;
  }
}

// Start of the overlap that precedes `new_begin`: the earliest word boundary in [floor, new_begin)
// whose text up to new_begin has at most `target` tokens, moved forward to the first sentence (or
// stronger) boundary at or after it when there is one, so the repeated text starts cleanly.
size_t overlap_start(std::string_view t, const Tokenizer& tok, size_t floor, size_t new_begin, int target) {
  if (target <= 0 || new_begin <= floor) return new_begin;
  // Tokens are at least one byte, so look back at most a generous multiple of the target in bytes.
  const size_t window = static_cast<size_t>(target) * 24 + 64;
  const size_t lo = new_begin - std::min(new_begin - floor, window);
  std::vector<size_t> cand = cuts_in(t, lo, new_begin, BoundaryKind::word);
  if (lo == floor) cand.insert(cand.begin(), floor);
  // count(c, new_begin) shrinks as c grows: bisection for the first candidate that fits.
  size_t a = 0, b = cand.size();
  while (a < b) {
    const size_t m = (a + b) / 2;
    if (count_tokens(tok, t, cand[m], new_begin) <= target) b = m;
    else a = m + 1;
  }
  if (a == cand.size()) return new_begin;
  for (size_t i = a; i < cand.size(); ++i) {
    const BoundaryKind k = cand[i] == floor ? BoundaryKind::paragraph : boundary_at(t, cand[i]);
    if (static_cast<int>(k) <= static_cast<int>(BoundaryKind::sentence)) return cand[i];
  }
  return cand[a];
}

}  // namespace

const char* boundary_kind_name(BoundaryKind k) {
  switch (k) {
    case BoundaryKind::document: return "document";
    case BoundaryKind::paragraph: return "paragraph";
    case BoundaryKind::line: return "line";
    case BoundaryKind::sentence: return "sentence";
    case BoundaryKind::word: return "word";
    case BoundaryKind::character: return "character";
  }
  return "?";
}

SummaryPlan plan_summary(std::string_view text, const Tokenizer& tok, int n_ctx, int prompt_overhead,
                         int max_answer_tokens, const SummaryPlanOptions& options) {
  if (n_ctx <= 0 || prompt_overhead < 0 || max_answer_tokens <= 0)
    throw Error(ErrorCode::invalid_argument, "plan_summary: n_ctx and max_answer_tokens must be > 0 (got " +
                                                 std::to_string(n_ctx) + ", " + std::to_string(max_answer_tokens) + ")");
  if (!(options.overlap >= 0 && options.overlap < 0.5))
    throw Error(ErrorCode::invalid_argument, "plan_summary: overlap must be in [0, 0.5)");
  SummaryPlan plan;
  plan.n_ctx = n_ctx;
  plan.prompt_overhead = prompt_overhead;
  plan.max_answer_tokens = max_answer_tokens;
  plan.document_tokens = count_tokens(tok, text, 0, text.size());
  const int slack = std::max(0, options.slack_tokens);
  plan.chunk_budget = n_ctx - prompt_overhead - max_answer_tokens - slack;
  if (plan.chunk_budget < options.min_chunk_tokens)
    throw Error(ErrorCode::invalid_argument,
                "summarize: a context of " + std::to_string(n_ctx) + " tokens leaves only " +
                    std::to_string(std::max(0, plan.chunk_budget)) + " tokens of text per part after the prompt (" +
                    std::to_string(prompt_overhead) + ") and the answer budget (" + std::to_string(max_answer_tokens) +
                    "); lower the answer length (--max-tokens)");
  plan.overlap_tokens = static_cast<int>(std::floor(options.overlap * plan.chunk_budget));
  plan.new_budget = plan.chunk_budget - plan.overlap_tokens;

  if (plan.document_tokens <= plan.chunk_budget) {
    SummaryStep s;
    s.kind = SummaryStep::Kind::direct;
    s.begin = s.new_begin = 0;
    s.end = text.size();
    s.input_tokens = plan.document_tokens;
    s.answer_tokens = max_answer_tokens;
    s.prompt_tokens = prompt_overhead + s.input_tokens;
    plan.steps.push_back(s);
    plan.direct = true;
    plan.n_chunks = 1;
    return plan;
  }
  plan.direct = false;

  // Level 0: units no larger than the new-content budget, packed greedily into chunks.
  std::vector<Unit> units;
  split_range(text, tok, 0, text.size(), BoundaryKind::paragraph, plan.new_budget, BoundaryKind::document, units);
  size_t i = 0, prev_new_begin = 0;
  while (i < units.size()) {
    const size_t new_begin = units[i].begin;
    size_t begin = plan.steps.empty() ? new_begin
                                      : overlap_start(text, tok, prev_new_begin, new_begin, plan.overlap_tokens);
    const int ov = count_tokens(tok, text, begin, new_begin);
    size_t j = i;
    int est = ov;
    while (j < units.size() && (j == i || est + units[j].tokens <= plan.chunk_budget)) est += units[j++].tokens;
    // The estimate adds pieces counted alone; check the real count and give back units while over.
    int real = count_tokens(tok, text, begin, units[j - 1].end);
    while (real > plan.chunk_budget && j > i + 1) {
      --j;
      real = count_tokens(tok, text, begin, units[j - 1].end);
    }
    if (real > plan.chunk_budget) {  // a lone unit plus its overlap: drop the overlap
      begin = new_begin;
      real = count_tokens(tok, text, begin, units[j - 1].end);
    }
    SummaryStep s;
    s.kind = SummaryStep::Kind::chunk;
    s.begin = begin;
    s.new_begin = new_begin;
    s.end = units[j - 1].end;
    s.end_boundary = units[j - 1].end_kind;
    s.input_tokens = real;
    s.answer_tokens = max_answer_tokens;
    s.prompt_tokens = prompt_overhead + real;
    plan.steps.push_back(s);
    prev_new_begin = new_begin;
    i = j;
  }
  plan.n_chunks = static_cast<int>(plan.steps.size());

  // Combine levels: each part is bounded by its answer budget plus the slack for the "\n\n" join.
  const int per_part = max_answer_tokens + std::max(slack, 2);
  const int combine_budget = n_ctx - prompt_overhead - max_answer_tokens - slack;
  const int fan_in = combine_budget / per_part;
  if (fan_in < 2)
    throw Error(ErrorCode::invalid_argument,
                "summarize: the document needs " + std::to_string(plan.n_chunks) + " parts, but a context of " +
                    std::to_string(n_ctx) + " tokens cannot combine two partial summaries of " +
                    std::to_string(max_answer_tokens) + " tokens; lower the answer length (--max-tokens)");
  std::vector<int> level_inputs(plan.steps.size());
  for (size_t k = 0; k < level_inputs.size(); ++k) level_inputs[k] = static_cast<int>(k);
  int level = 0;
  while (level_inputs.size() > 1) {
    ++level;
    const int m = static_cast<int>(level_inputs.size());
    const int groups = (m + fan_in - 1) / fan_in;  // ≤ ceil(m/2) < m: every level shrinks
    std::vector<int> next;
    int taken = 0;
    for (int g = 0; g < groups; ++g) {
      const int size = m / groups + (g < m % groups ? 1 : 0);  // balanced groups
      SummaryStep s;
      s.kind = SummaryStep::Kind::combine;
      s.level = level;
      for (int k = 0; k < size; ++k) {
        const int in = level_inputs[size_t(taken + k)];
        s.inputs.push_back(in);
        s.input_tokens += plan.steps[size_t(in)].answer_tokens + std::max(slack, 2);
      }
      taken += size;
      s.answer_tokens = max_answer_tokens;
      s.prompt_tokens = prompt_overhead + s.input_tokens;
      next.push_back(static_cast<int>(plan.steps.size()));
      plan.steps.push_back(std::move(s));
    }
    level_inputs = std::move(next);
  }
  plan.n_levels = level;
  return plan;
}

std::vector<TokenId> summary_prompt(ChatTemplateKind kind, const Tokenizer& tok, std::string_view text,
                                    bool combine) {
  if (kind == ChatTemplateKind::plain) {
    std::string s(text);
    s += "\n\nTL;DR:";
    return tok.encode(s, true);
  }
  std::string s = combine ? "The following are summaries of consecutive parts of one document. Write one concise "
                            "summary of the whole document:\n\n"
                          : "Summarize the following text:\n\n";
  s += text;
  return apply_chat_template(kind, tok, {{ChatMessage::Role::user, s}});
}

int summary_prompt_overhead(ChatTemplateKind kind, const Tokenizer& tok) {
  const int a = static_cast<int>(summary_prompt(kind, tok, "", false).size());
  const int b = static_cast<int>(summary_prompt(kind, tok, "", true).size());
  return std::max(a, b);
}

}  // namespace wkv
