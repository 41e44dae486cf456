// Writes tests/fixtures/tokenizer_golden.json: tricky strings and their ids under tiktoken's `gpt2` encoding.
// The fixture is committed, so the C++ test needs neither node nor tiktoken.
//
//   mkdir -p /tmp/tk && (cd /tmp/tk && npm init -y && npm install tiktoken)
//   TIKTOKEN=/tmp/tk/node_modules/tiktoken node scripts/make_tokenizer_golden.mjs
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const require = createRequire(import.meta.url);
const { get_encoding } = require(process.env.TIKTOKEN || "tiktoken");
const enc = get_encoding("gpt2");
const here = path.dirname(fileURLToPath(import.meta.url));

const longWord = "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(3);
const strings = [
  // contractions in every case (GPT-2's are case-sensitive: only lower case splits off)
  "I'm you're he's she'd we'll they've it's can't",
  "I'M YOU'RE HE'S SHE'D WE'LL THEY'VE IT'S CAN'T",
  "I'm You'Re He'S she'D We'Ll they'vE",
  "'s 't 're 've 'm 'll 'd",
  "'S 'T 'RE 'VE 'M 'LL 'D",
  "rock'n'roll o'clock y'all ma'am",
  "don''t ''s '''re",
  "the dog's bone's",
  "'hello' \"quoted\" `backtick`",
  "'' ' '\n'",
  // digits and number scripts
  "1234567890 12 345 6789",
  "3.14159 2,718 1e-10 -42 +7 0x1F 1_000_000",
  "Phone: +1 (555) 123-4567",
  "٠١٢٣٤٥٦٧٨٩ ۰۱۲۳ ०१२३४५६७८९",
  "Ⅻ ⅻ ½ ¾ ² ³ ① ② ⑳ 〇",
  "一二三 四五六 1st 2nd 3rd 4th",
  "abc123def 123abc abc 123",
  "𝟘𝟙𝟚 𝟏𝟐𝟑",
  // whitespace
  "hello world",
  "hello  world",
  "hello   world",
  "hello\tworld",
  "hello \tworld",
  "hello\t world",
  "  leading and trailing  ",
  "\n\nparagraph\n\n\nnext\n",
  "line one\r\nline two\r\n",
  " \n \n word",
  "word   \n   word",
  "tabs\t\t\tand spaces   \t \t",
  "nbsp\u00a0here\u00a0\u00a0twice",
  "ideographic\u3000space\u2003em\u2009thin\u202fnarrow",
  "line\u2028separator\u2029para",
  "   ",
  "\t",
  "\n",
  " ",
  "a\u000bb\u000cc\u0085d",
  "x\u001cy\u001dz",
  // CJK, RTL, other scripts
  "日本語のテキストです。",
  "中文文本，包括标点符号！",
  "한국어 텍스트입니다",
  "עברית מימין לשמאל",
  "العربية من اليمين إلى اليسار",
  "Привет, мир! Ёжик",
  "Ελληνικά κείμενα",
  "ภาษาไทย ไม่มีช่องว่าง",
  "हिन्दी देवनागरी",
  // emoji and sequences
  "👋🌍 hello 🙂",
  "👨‍👩‍👧‍👦 family",
  "🏳️‍🌈 flag 🇺🇸🇯🇵",
  "👍🏽 skin tone ❤️ heart",
  // combining marks and normalization forms
  "e\u0301 vs é",
  "a\u0300\u0301\u0302\u0303 stacked",
  "Zalgo: Z\u0351\u0364a\u0308\u0310l\u0313g\u0315o",
  "n\u0303 ñ Å Å",
  // code
  "def foo(x):\n    return x ** 2  # square\n",
  "int main() { printf(\"%d\\n\", 42); return 0; }",
  "if (a && b || !c) { x += 1; } else { y -= 2; }",
  "<html><body class=\"x\">Hi</body></html>",
  "SELECT * FROM users WHERE id = 1;",
  "    indented\n        more\n\ttab",
  "path/to/file.txt C:\\Windows\\System32",
  "https://example.com/a?b=c&d=e#frag",
  "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
  // long words and repetition
  longWord,
  "a".repeat(300),
  "ab".repeat(100) + " " + "xyz".repeat(50),
  "!!!!!!????....,,,,;;;;",
  "------------------------------------------------",
  "==========\n**********",
  "supercalifragilisticexpialidocious antidisestablishmentarianism",
  // special token in text (encoded as 50256 in "special" mode, as text with special: false)
  "Hello<|endoftext|>World",
  "<|endoftext|>",
  "a <|endoftext|> b<|endoftext|><|endoftext|>c",
  "<|endoftext|",
  "<|endoftext|>'s\n<|endoftext|> <|endoftext|>",
  // mixed
  "Mixed: café naïve résumé coöperate",
  "Ünïcödé ÜBER über",
  "$100 €50 £30 ¥1000 ₹500",
  "email@example.com @user #hashtag",
  "x²+y²=z² ∑∫∂√∞≠≤≥",
  "\u00ad soft\u00adhyphen \u200b zero\u200bwidth \u200d joiner",
  "\ufeffBOM at start",
  "𐍈 Gothic 𓀀 hieroglyph 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  // letters/numbers new in Unicode 15-16 (tiktoken's tables know them; Python 3.11's do not)
  "\u1c89's \u{105c0}\u{105c1}'s \u{31350}'re \u{1e5f1}'d x\u{11bf0}",
];

// Random strings from a seeded generator over a pool of characters that stress the pattern.
let seed = 20240601;
const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
const pool = [..." \t\n\r'sStTrRevVlLmMdD019a.,!?-_()\"\u00a0\u3000\u2003é\u0301中文😀\u200d👍🏽١२Ⅻ½ЖωאبǅʰऀཀᄀＡ"];
for (let k = 0; k < 40; ++k) {
  let t = "";
  const len = 1 + rand(60);
  for (let i = 0; i < len; ++i) t += pool[rand(pool.length)];
  strings.push(t);
}

const cases = [];
for (const text of strings) {
  const hasSpecial = text.includes("<|endoftext|>");
  cases.push({ text, special: true, ids: Array.from(enc.encode(text, "all")) });
  if (hasSpecial) cases.push({ text, special: false, ids: Array.from(enc.encode_ordinary(text)) });
}
const out = path.join(here, "..", "tests", "fixtures", "tokenizer_golden.json");
const header = { generator: "scripts/make_tokenizer_golden.mjs", encoding: "gpt2",
  tiktoken: require(path.join(process.env.TIKTOKEN || "tiktoken", "package.json")).version };
// One case per line keeps the fixture reviewable.
writeFileSync(out, JSON.stringify(header).slice(0, -1) + ',\n"cases": [\n' +
  cases.map((c) => JSON.stringify(c)).join(",\n") + "\n]}\n");
console.log(`wrote ${cases.length} cases to ${out}`);
enc.free();
