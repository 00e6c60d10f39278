//! Training and held-out conversations generated from the sample plugins' tools: many
//! phrasings in English and Chinese, argument values from large vocabularies and random
//! strings (so the model learns to copy what it has never seen), answers that use a tool's
//! result, failed tools, and prompts that need no tool.
//!
//! The held-out split uses phrasings and values the training split never does.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

/// Which side of the split to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Phrasings and values the model trains on.
    Train,
    /// Phrasings and values kept out of training.
    Heldout,
}

/// A tool's prompt name and its arguments.
type Call = (String, Map<String, Value>);

/// A request's text and the call it should produce.
type Drawn = (String, Option<Call>);

/// A user request and the call it should produce (tool prompt name and arguments), or None
/// when no tool is needed.
#[derive(Debug, Clone)]
pub struct Request {
    /// What the user says.
    pub text: String,
    /// The expected call.
    pub call: Option<Call>,
    /// Whether the request is in Chinese (answers follow its language).
    pub chinese: bool,
}

/// Draws requests for one split.
pub struct Generator {
    /// The random source.
    pub rng: StdRng,
    split: Split,
}

/// Pick one of `items`: in the training split from all but the last `held`, in the held-out
/// split from the last `held`.
fn split_pick<'a>(rng: &mut StdRng, split: Split, items: &[&'a str], held: usize) -> &'a str {
    let cut = items.len() - held;
    let pool = match split {
        Split::Train => &items[..cut],
        Split::Heldout => &items[cut..],
    };
    pool.choose(rng).copied().unwrap_or(items[0])
}

const CITIES_TRAIN: &[&str] = &[
    "Beijing",
    "Shanghai",
    "Paris",
    "London",
    "Tokyo",
    "New York",
    "Berlin",
    "Madrid",
    "Rome",
    "Sydney",
    "Toronto",
    "Chicago",
    "Moscow",
    "Cairo",
    "Mumbai",
    "Delhi",
    "Seoul",
    "Bangkok",
    "Istanbul",
    "Lagos",
    "Lima",
    "Bogota",
    "Santiago",
    "Vienna",
    "Prague",
    "Warsaw",
    "Dublin",
    "Lisbon",
    "Oslo",
    "Stockholm",
    "Athens",
    "Zurich",
    "Geneva",
    "Munich",
    "Hamburg",
    "Milan",
    "Naples",
    "Boston",
    "Seattle",
    "Denver",
    "Austin",
    "Dallas",
    "Houston",
    "Miami",
    "Atlanta",
    "Phoenix",
    "Montreal",
    "Vancouver",
    "Osaka",
    "Kyoto",
    "Hanoi",
    "Manila",
    "Jakarta",
    "Singapore",
    "Kuala Lumpur",
    "Dubai",
    "Doha",
    "Riyadh",
    "Tehran",
    "Karachi",
    "Dhaka",
    "Kathmandu",
    "Colombo",
    "Perth",
    "Melbourne",
    "Auckland",
    "Cape Town",
    "Casablanca",
    "Tunis",
    "Accra",
    "Havana",
    "Quito",
    "Caracas",
    "Montevideo",
    "San Francisco",
    "Los Angeles",
    "Las Vegas",
    "Hong Kong",
    "Macau",
    "Taipei",
];
const CITIES_HELDOUT: &[&str] = &[
    "Nairobi",
    "Helsinki",
    "Reykjavik",
    "Ulaanbaatar",
    "Buenos Aires",
    "Addis Ababa",
    "Tallinn",
    "Riga",
    "Vilnius",
    "Ljubljana",
    "Zagreb",
    "Sarajevo",
    "Tbilisi",
    "Yerevan",
    "Baku",
    "Almaty",
    "Tashkent",
    "Bishkek",
    "Dushanbe",
    "Kampala",
    "Kigali",
    "Dakar",
    "Bamako",
    "Windhoek",
    "Gaborone",
    "Maputo",
    "Antananarivo",
    "Port Louis",
    "Valletta",
    "Nicosia",
    "Tirana",
    "Skopje",
    "Podgorica",
    "Chisinau",
    "Minsk",
    "Thimphu",
    "Vientiane",
    "Phnom Penh",
];
const CITIES_ZH_TRAIN: &[&str] = &[
    "北京",
    "上海",
    "广州",
    "深圳",
    "杭州",
    "南京",
    "成都",
    "重庆",
    "武汉",
    "西安",
    "天津",
    "苏州",
    "长沙",
    "郑州",
    "青岛",
    "大连",
    "厦门",
    "昆明",
    "沈阳",
    "哈尔滨",
    "济南",
    "福州",
    "合肥",
    "南昌",
    "贵阳",
    "南宁",
    "兰州",
    "拉萨",
];
const CITIES_ZH_HELDOUT: &[&str] = &[
    "乌鲁木齐",
    "呼和浩特",
    "银川",
    "西宁",
    "海口",
    "三亚",
    "太原",
    "石家庄",
    "长春",
    "洛阳",
    "桂林",
    "丽江",
];

const WORDS_TRAIN: &[&str] = &[
    "apple", "river", "garden", "window", "silver", "coffee", "market", "planet", "rocket",
    "forest", "yellow", "summer", "winter", "castle", "dragon", "button", "pencil", "travel",
    "guitar", "butter", "candle", "bridge", "mirror", "orange", "purple", "school", "office",
    "ticket", "letter", "dinner", "lunch", "budget", "report", "meeting", "project", "recipe",
    "shopping", "list", "ideas", "plans", "books", "music", "movies", "friends", "family", "work",
    "home", "trip", "notes", "tasks", "goals", "health", "sport", "tennis", "soccer", "chess",
    "piano", "camera", "laptop", "phone", "email", "invoice", "contract", "draft", "summary",
    "weekly", "daily", "monday", "friday", "birthday", "holiday", "vacation", "flight", "hotel",
    "train", "station", "airport", "doctor", "dentist", "bank", "milk", "eggs", "bread", "cheese",
    "tomato", "pasta", "rice", "salad", "soup", "cake", "tea", "water", "juice", "the", "quick",
    "brown", "fox", "jumps", "over", "lazy", "dog", "hello", "world", "open", "source", "agent",
    "tools", "sandbox", "model", "data", "cloud", "server", "client", "router", "secret", "simple",
    "happy", "green",
];
const WORDS_HELDOUT: &[&str] = &[
    "knitting",
    "volcano",
    "mars",
    "rover",
    "lantern",
    "pebble",
    "harbor",
    "meadow",
    "thunder",
    "velvet",
    "walnut",
    "saffron",
    "glacier",
    "compass",
    "orchid",
    "falcon",
    "biscuit",
    "quartz",
    "tundra",
    "mango",
    "zephyr",
    "nebula",
    "cobalt",
    "juniper",
    "pyramid",
    "anchor",
    "marble",
    "origami",
    "kettle",
    "lighthouse",
];
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "ten", "bo", "zu", "shi", "an", "del", "mar", "vo", "rin", "ta", "ko",
    "len", "su", "gar", "po", "nel", "fi", "dor", "ex", "qui", "wen", "ya", "zor", "ul", "bri",
    "tas",
];

impl Generator {
    /// A generator for `split` seeded with `seed`.
    pub fn new(split: Split, seed: u64) -> Self {
        Self { rng: rand::SeedableRng::seed_from_u64(seed), split }
    }

    fn heldout(&self) -> bool {
        self.split == Split::Heldout
    }

    /// Random letters in a random case style: values no list contains.
    fn random_word(&mut self) -> String {
        let len = self.rng.random_range(3..=10);
        let word: String =
            (0..len).map(|_| (b'a' + self.rng.random_range(0..26u8)) as char).collect();
        match self.rng.random_range(0..4) {
            0 => word.to_uppercase(),
            1 => capitalise(&word),
            _ => word,
        }
    }

    fn made_up_name(&mut self) -> String {
        let n = self.rng.random_range(2..=3);
        capitalise(&(0..n).map(|_| *SYLLABLES.choose(&mut self.rng).unwrap()).collect::<String>())
    }

    /// A city: from the split's list, or (training only) invented.
    fn city(&mut self, chinese: bool) -> String {
        let lists = match (self.heldout(), chinese) {
            (false, false) => CITIES_TRAIN,
            (false, true) => CITIES_ZH_TRAIN,
            (true, false) => CITIES_HELDOUT,
            (true, true) => CITIES_ZH_HELDOUT,
        };
        let roll = self.rng.random_range(0..100);
        if self.heldout() || roll < 30 {
            return lists.choose(&mut self.rng).unwrap().to_string();
        }
        match roll {
            30..=64 => self.random_word(),
            65..=84 => self.made_up_name(),
            _ => format!("{} {}", self.made_up_name(), self.made_up_name()),
        }
    }

    /// One to `max` words: from the split's vocabulary or random.
    fn words(&mut self, max: usize) -> String {
        let n = self.rng.random_range(1..=max);
        (0..n)
            .map(|_| {
                let list = if self.heldout() { WORDS_HELDOUT } else { WORDS_TRAIN };
                if self.rng.random_bool(0.4) {
                    self.random_word().to_lowercase()
                } else {
                    list.choose(&mut self.rng).unwrap().to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn number(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0..=5 => self.rng.random_range(1..1000).to_string(),
            6..=7 => format!("{}.{}", self.rng.random_range(0..100), self.rng.random_range(1..10)),
            _ => self.rng.random_range(1..20).to_string(),
        }
    }

    fn expression(&mut self) -> String {
        let terms = self.rng.random_range(2..=4);
        let mut out = self.number();
        for _ in 1..terms {
            let op = *["+", "-", "*", "/", "^", "+", "*"].choose(&mut self.rng).unwrap();
            out = format!("{out}{op}{}", self.number());
        }
        match self.rng.random_range(0..6) {
            0 => format!("({out})*{}", self.number()),
            1 => format!("sqrt({})", self.number()),
            2 => format!("{}*({out})", self.number()),
            _ => out,
        }
    }

    /// A random request of the split: usually a tool call, sometimes none needed.
    pub fn request(&mut self) -> Request {
        let chinese = self.rng.random_bool(0.3);
        let kind = self.rng.random_range(0..100);
        let (text, call) = match kind {
            0..=7 => (self.chitchat(chinese), None),
            8..=19 => self.weather(chinese),
            20..=31 => self.calculator(chinese),
            32..=43 => self.units(chinese),
            44..=51 => self.note_write(chinese),
            52..=56 => self.note_by_name("read", chinese),
            57..=60 => self.note_by_name("delete", chinese),
            61..=64 => self.note_list(chinese),
            65..=70 => self.text_tool("word_count", chinese),
            71..=75 => self.text_tool("slugify", chinese),
            76..=80 => self.text_tool("base64_encode", chinese),
            81..=85 => self.base64_decode(chinese),
            86..=91 => self.text_tool("sha256", chinese),
            // The http plugin is absent from training: it measures how well the model reads
            // a tool it has never been taught.
            _ if self.heldout() => self.http(chinese),
            _ if chinese => (self.chitchat(true), None),
            _ => (self.general().to_string(), None),
        };
        Request { text, call, chinese }
    }

    fn template(&mut self, en: &[&str], zh: &[&str], chinese: bool) -> String {
        let split = self.split;
        if chinese {
            split_pick(&mut self.rng, split, zh, 2)
        } else {
            split_pick(&mut self.rng, split, en, 2)
        }
        .to_string()
    }

    fn weather(&mut self, chinese: bool) -> Drawn {
        let chinese_city = chinese && self.rng.random_bool(0.7);
        let city = self.city(chinese_city);
        let t = self.template(
            &[
                "What's the weather in {}?",
                "How is the weather in {} today?",
                "Is it raining in {}?",
                "weather {}",
                "Tell me the weather for {}.",
                "Do I need an umbrella in {}?",
                "What's the temperature in {} right now?",
                "Check the weather in {} please",
                "How hot is it in {}?",
                "Current conditions in {}?",
                "Could you look up the forecast for {}?",
                "I'm heading to {} - what's it like outside there?",
            ],
            &[
                "{}天气怎么样？",
                "{}今天的天气如何？",
                "查一下{}的天气",
                "{}现在多少度？",
                "{}下雨了吗？",
                "帮我看看{}的天气",
                "请问{}那边天气好吗？",
                "我要去{}，那里天气怎样？",
            ],
            chinese,
        );
        (t.replace("{}", &city), call("get_weather", json!({"location": city})))
    }

    fn calculator(&mut self, chinese: bool) -> Drawn {
        let expr = self.expression();
        let t = self.template(
            &[
                "What is {}?",
                "Calculate {}",
                "Compute {} please",
                "{} = ?",
                "Evaluate {}",
                "How much is {}?",
                "Can you work out {}?",
                "Solve {}",
                "What do you get for {}?",
                "Quick math: {}",
                "Please figure out {} for me.",
                "I need the value of {}",
            ],
            &[
                "计算 {}",
                "{} 等于多少？",
                "帮我算一下 {}",
                "请计算 {} 的结果",
                "{} 是多少",
                "算算 {}",
                "麻烦求一下 {} 的值",
                "{} 得多少？",
            ],
            chinese,
        );
        (t.replace("{}", &expr), call("evaluate", json!({"expression": expr})))
    }

    fn units(&mut self, chinese: bool) -> Drawn {
        const PAIRS: &[(&str, &str)] = &[
            ("km", "miles"),
            ("miles", "km"),
            ("m", "ft"),
            ("ft", "m"),
            ("cm", "inches"),
            ("inches", "cm"),
            ("kg", "lb"),
            ("lb", "kg"),
            ("g", "oz"),
            ("oz", "g"),
            ("C", "F"),
            ("F", "C"),
            ("K", "C"),
            ("L", "gal"),
            ("gal", "L"),
            ("cups", "mL"),
            ("mL", "cups"),
            ("h", "min"),
            ("min", "s"),
            ("days", "h"),
            ("mi", "km"),
            ("yd", "m"),
            ("celsius", "fahrenheit"),
            ("fahrenheit", "celsius"),
            ("meters", "feet"),
        ];
        let (from, to) = *PAIRS.choose(&mut self.rng).unwrap();
        let value = self.number();
        let t = self.template(
            &[
                "Convert {v} {f} to {t}",
                "How many {t} is {v} {f}?",
                "{v} {f} in {t}",
                "What is {v} {f} in {t}?",
                "Please convert {v} {f} into {t}.",
                "{v} {f} to {t}?",
                "I have {v} {f}, how much is that in {t}?",
                "Change {v} {f} to {t}",
                "Turn {v} {f} into {t} for me",
                "What's {v} {f} expressed in {t}?",
            ],
            &[
                "把 {v} {f} 换算成 {t}",
                "{v} {f} 等于多少 {t}？",
                "{v} {f} 是多少 {t}",
                "请把 {v} {f} 转换为 {t}",
                "{v} {f} 换成 {t}",
                "帮我换算 {v} {f} 到 {t}",
            ],
            chinese,
        );
        let number: Value = serde_json::from_str(&value).unwrap_or(json!(1));
        let text = t.replace("{v}", &value).replace("{f}", from).replace("{t}", to);
        (text, call("convert", json!({"value": number, "from": from, "to": to})))
    }

    fn note_name(&mut self) -> String {
        if self.rng.random_bool(0.5) { self.words(2) } else { self.random_word().to_lowercase() }
    }

    fn note_write(&mut self, chinese: bool) -> Drawn {
        let name = self.note_name();
        let text = self.words(5);
        let t = self.template(
            &[
                "Save a note called {n}: {t}",
                "Write a note named {n} with the text {t}",
                "Create a note {n} saying {t}",
                "Note {n}: {t}",
                "Remember this as {n}: {t}",
                "Store {t} in the note {n}",
                "Put {t} into a note called {n}",
                "Make a note titled {n} that says {t}",
            ],
            &[
                "保存笔记 {n}：{t}",
                "新建一个叫 {n} 的笔记，内容是 {t}",
                "记下来，笔记名 {n}，内容 {t}",
                "把 {t} 存到笔记 {n} 里",
                "写一条笔记 {n}，写上 {t}",
                "创建笔记 {n}，内容为 {t}",
            ],
            chinese,
        );
        let request = t.replace("{n}", &name).replace("{t}", &text);
        (request, call("write", json!({"name": name, "text": text})))
    }

    fn note_by_name(&mut self, tool: &str, chinese: bool) -> Drawn {
        let name = self.note_name();
        let t = if tool == "read" {
            self.template(
                &[
                    "Read my note {}",
                    "Show me the note called {}",
                    "What does the note {} say?",
                    "Open the note {}",
                    "Read the {} note",
                    "Display note {}",
                    "What did I write in the note {}?",
                    "Pull up my {} note",
                ],
                &[
                    "读一下笔记 {}",
                    "打开笔记 {}",
                    "笔记 {} 里写了什么？",
                    "给我看看笔记 {}",
                    "显示笔记 {} 的内容",
                    "我在笔记 {} 里记了什么？",
                ],
                chinese,
            )
        } else {
            self.template(
                &[
                    "Delete the note {}",
                    "Remove my note called {}",
                    "Erase note {}",
                    "Get rid of the {} note",
                    "Delete note {} please",
                    "Throw away the note {}",
                    "I no longer need the note {}, delete it",
                    "Wipe the note named {}",
                ],
                &[
                    "删除笔记 {}",
                    "把笔记 {} 删掉",
                    "移除笔记 {}",
                    "删掉 {} 这条笔记",
                    "不需要笔记 {} 了，删了吧",
                    "请清除笔记 {}",
                ],
                chinese,
            )
        };
        (t.replace("{}", &name), call(tool, json!({"name": name})))
    }

    fn note_list(&mut self, chinese: bool) -> Drawn {
        let t = self.template(
            &[
                "List my notes",
                "What notes do I have?",
                "Show all my notes",
                "Which notes are saved?",
                "list notes",
                "Show me every note I saved",
                "What have I written down so far?",
                "Give me an overview of my notes",
            ],
            &[
                "列出我的笔记",
                "我有哪些笔记？",
                "显示所有笔记",
                "看看保存了哪些笔记",
                "我都记了些什么笔记？",
                "把笔记列表给我",
            ],
            chinese,
        );
        (t, call("list", json!({})))
    }

    fn text_tool(&mut self, tool: &str, chinese: bool) -> Drawn {
        let text = self.words(5);
        let (en, zh): (&[&str], &[&str]) = match tool {
            "word_count" => (
                &[
                    "Count the words in: {}",
                    "How many words are in \"{}\"?",
                    "Word count of {}",
                    "How many words does this have: {}",
                    "Count words: {}",
                    "Tell me the number of words in {}",
                    "How long is this text in words: {}",
                    "Give me a word count for \"{}\"",
                ],
                &[
                    "统计字数：{}",
                    "这段话有多少个词：{}",
                    "数一下 {} 有几个词",
                    "帮我统计 \"{}\" 的词数",
                    "{} 一共几个词？",
                    "计算这段文字的词数：{}",
                ],
            ),
            "slugify" => (
                &[
                    "Make a URL slug from: {}",
                    "Slugify {}",
                    "Turn \"{}\" into a slug",
                    "Create a slug for {}",
                    "What is the slug of {}?",
                    "Generate a URL slug for \"{}\"",
                    "I need a slug for the title {}",
                    "Convert {} to a slug",
                ],
                &[
                    "把 {} 转成 URL slug",
                    "生成 {} 的 slug",
                    "给 \"{}\" 做一个网址别名",
                    "请把 {} 变成 slug",
                    "{} 的 slug 是什么？",
                    "为标题 {} 生成 slug",
                ],
            ),
            "base64_encode" => (
                &[
                    "Encode {} in base64",
                    "Base64 encode: {}",
                    "What is {} in base64?",
                    "Convert \"{}\" to base64",
                    "base64 of {}",
                    "Give me the base64 encoding of {}",
                    "Please base64-encode \"{}\"",
                    "Turn {} into base64",
                ],
                &[
                    "把 {} 编码成 base64",
                    "{} 的 base64 是什么？",
                    "base64 编码：{}",
                    "请对 \"{}\" 做 base64 编码",
                    "把这段转成 base64：{}",
                    "帮我 base64 编码 {}",
                ],
            ),
            _ => (
                &[
                    "What is the SHA-256 of {}?",
                    "Hash {} with sha256",
                    "sha256 of \"{}\"",
                    "Compute the SHA-256 hash of {}",
                    "Give me the sha256 for {}",
                    "Calculate sha256: {}",
                    "I need the SHA-256 digest of \"{}\"",
                    "Fingerprint {} with SHA-256",
                ],
                &[
                    "计算 {} 的 SHA-256",
                    "{} 的 sha256 哈希是多少？",
                    "帮我算 \"{}\" 的 sha256",
                    "对 {} 做 SHA-256",
                    "求 {} 的 SHA-256 摘要",
                    "请给出 \"{}\" 的 sha256 值",
                ],
            ),
        };
        let t = self.template(en, zh, chinese);
        (t.replace("{}", &text), call(tool, json!({"text": text})))
    }

    fn base64_decode(&mut self, chinese: bool) -> Drawn {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.encode(self.words(3));
        let t = self.template(
            &[
                "Decode this base64: {}",
                "What does {} decode to?",
                "base64 decode {}",
                "Decode {} from base64",
                "What text is {}?",
                "Please decode the base64 string {}",
                "Unpack this base64 for me: {}",
                "Translate {} out of base64",
            ],
            &[
                "解码 base64：{}",
                "{} 解码后是什么？",
                "把 {} 从 base64 解码",
                "base64 解码 {}",
                "请解码这个 base64 字符串：{}",
                "帮我把 {} 还原成文本",
            ],
            chinese,
        );
        (t.replace("{}", &data), call("base64_decode", json!({"data": data})))
    }

    fn http(&mut self, chinese: bool) -> Drawn {
        let host = self.words(1).to_lowercase();
        let tld = *["com", "org", "net", "io", "dev", "cn"].choose(&mut self.rng).unwrap();
        let path = self.words(1).to_lowercase();
        let url = format!("https://{host}.{tld}/{path}");
        let t = self.template(
            &[
                "Fetch {}",
                "Download {}",
                "GET {}",
                "What does {} return?",
                "Open the page {}",
                "Get the contents of {}",
                "Can you load {} for me?",
                "Retrieve the URL {}",
            ],
            &[
                "获取 {}",
                "下载 {} 的内容",
                "打开网页 {}",
                "请求一下 {}",
                "帮我抓取 {} 的内容",
                "访问 {} 看看返回什么",
            ],
            chinese,
        );
        (t.replace("{}", &url), call("get", json!({"url": url})))
    }

    /// A question that needs no tool, answered from what a model knows.
    pub fn general(&mut self) -> &'static str {
        split_pick(&mut self.rng, self.split, GENERAL, 4)
    }

    /// A tool no plugin has, with a request for it: training offers a few of these among the
    /// real tools so that the model learns to read the tools block, not to remember a list.
    pub fn invented(&mut self) -> (Invented, Drawn) {
        const VERBS: &[&str] = &[
            "find",
            "track",
            "book",
            "translate",
            "check",
            "cancel",
            "rate",
            "schedule",
            "order",
            "search",
            "reserve",
            "lookup",
            "play",
            "share",
            "archive",
            "summarize",
        ];
        const NOUNS: &[&str] = &[
            "flight",
            "recipe",
            "stock",
            "package",
            "song",
            "movie",
            "hotel",
            "train",
            "podcast",
            "contact",
            "meeting",
            "taxi",
            "restaurant",
            "lyrics",
            "invoice",
            "ticket",
            "photo",
            "course",
            "parcel",
            "playlist",
        ];
        const PARAMS: &[&str] = &["name", "query", "title", "code", "id", "item", "keyword"];
        let verb = *VERBS.choose(&mut self.rng).unwrap();
        let noun = *NOUNS.choose(&mut self.rng).unwrap();
        let param = *PARAMS.choose(&mut self.rng).unwrap();
        let value = if self.rng.random_bool(0.5) { self.words(3) } else { self.made_up_name() };
        let tool = Invented {
            name: format!("{verb}_{noun}"),
            description: format!("{} a {noun} by its {param}.", capitalise(verb)),
            param: param.to_string(),
        };
        let t = *[
            "Please {v} the {n} {x}",
            "Can you {v} the {n} called {x}?",
            "I want to {v} a {n}: {x}",
            "{v} {n} {x}",
            "Could you {v} the {n} with {p} {x} for me?",
            "I need you to {v} this {n}: {x}",
            "Help me {v} the {n} \"{x}\"",
        ]
        .choose(&mut self.rng)
        .unwrap();
        let text = t.replace("{v}", verb).replace("{n}", noun).replace("{p}", param);
        let text = capitalise(&text.replace("{x}", &value));
        let args = json!({ param: value });
        (tool, (text, call(&format!("{verb}_{noun}"), args)))
    }

    fn chitchat(&mut self, chinese: bool) -> String {
        self.template(
            &[
                "Hello!",
                "Hi there",
                "Who are you?",
                "What can you do?",
                "Thanks!",
                "Thank you very much",
                "Good morning",
                "Tell me about yourself",
                "How are you?",
                "Bye",
                "What tools do you have?",
                "Can you help me?",
                "Good evening, assistant",
                "What are you able to help me with?",
                "Cheers, that was helpful",
            ],
            &[
                "你好",
                "你是谁？",
                "你能做什么？",
                "谢谢",
                "早上好",
                "再见",
                "介绍一下你自己",
                "你好吗？",
                "晚上好呀",
                "你都能帮我做些什么？",
                "太感谢了",
            ],
            chinese,
        )
    }
}

/// An invented tool: `name(param)`, what it does.
pub struct Invented {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its one string argument.
    pub param: String,
}

/// Questions that need no tool; the held-out split takes the last four.
pub const GENERAL: &[&str] = &[
    "What is the capital of France?",
    "Why is the sky blue?",
    "Give me a tip for sleeping better.",
    "What is photosynthesis?",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "Tell me a fun fact about octopuses.",
    "What does a computer processor do?",
    "Suggest a healthy breakfast.",
    "What is the largest planet in our solar system?",
    "What is gravity?",
    "Recommend a good habit for studying.",
    "Who wrote Romeo and Juliet?",
    "What is the difference between a frog and a toad?",
    "How can I be more productive in the morning?",
    "Explain what a rainbow is.",
    "What should I pack for a picnic?",
    "Why do cats purr?",
    "What is machine learning?",
    "Give me an idea for a birthday present.",
    "What is the tallest animal?",
    "How do bees make honey?",
    "Tell me something interesting about the moon.",
    "What is a good way to learn a new language?",
];

fn call(name: &str, args: Value) -> Option<Call> {
    Some((name.to_string(), args.as_object().cloned().unwrap_or_default()))
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The model's answer to a request that needs no tool.
pub fn direct_answer(chinese: bool) -> &'static str {
    if chinese {
        "你好！我可以查天气、做计算、换算单位、管理笔记、处理文本和获取网页。"
    } else {
        "Hello! I can check the weather, do math, convert units, keep notes, work with text and fetch web pages."
    }
}

/// The model's answer once `tool` returned `result` (a JSON value) for a request.
pub fn answer_from_result(
    tool: &str,
    args: &Map<String, Value>,
    result: &Value,
    chinese: bool,
) -> String {
    let plain = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let field = |name: &str| result.get(name).map(plain).unwrap_or_default();
    let arg = |name: &str| args.get(name).map(plain).unwrap_or_default();
    match (tool, chinese) {
        ("get_weather", false) => format!(
            "It is {}°C and {} in {}.",
            field("temperature"),
            field("condition"),
            field("city")
        ),
        ("get_weather", true) => {
            format!("{}现在{}°C，{}。", field("city"), field("temperature"), field("condition"))
        }
        ("evaluate", false) => format!("{} = {}.", arg("expression"), plain(result)),
        ("evaluate", true) => format!("{} 的结果是 {}。", arg("expression"), plain(result)),
        ("convert", false) => {
            format!("{} {} is {} {}.", arg("value"), arg("from"), field("value"), field("unit"))
        }
        ("convert", true) => {
            format!("{} {} 等于 {} {}。", arg("value"), arg("from"), field("value"), field("unit"))
        }
        ("write", false) => format!("Saved the note {}.", arg("name")),
        ("write", true) => format!("已保存笔记 {}。", arg("name")),
        ("read", false) => format!("The note {} says: {}", arg("name"), field("text")),
        ("read", true) => format!("笔记 {} 的内容是：{}", arg("name"), field("text")),
        ("delete", false) => format!("Deleted the note {}.", arg("name")),
        ("delete", true) => format!("已删除笔记 {}。", arg("name")),
        ("list", _) => {
            let names: Vec<String> = result
                .get("notes")
                .and_then(Value::as_array)
                .map(|notes| notes.iter().filter_map(|n| n.get("name").map(plain)).collect())
                .unwrap_or_default();
            match (names.is_empty(), chinese) {
                (true, false) => "You have no notes yet.".into(),
                (true, true) => "你还没有笔记。".into(),
                (false, false) => format!("Your notes: {}.", names.join(", ")),
                (false, true) => format!("你的笔记：{}。", names.join("、")),
            }
        }
        ("word_count", false) => format!("It has {} words.", field("words")),
        ("word_count", true) => format!("一共有 {} 个词。", field("words")),
        ("slugify", false) => format!("The slug is {}.", plain(result)),
        ("slugify", true) => format!("slug 是 {}。", plain(result)),
        ("sha256", false) => format!("The SHA-256 is {}.", plain(result)),
        ("sha256", true) => format!("SHA-256 是 {}。", plain(result)),
        (_, false) => format!("The result is {}.", plain(result)),
        (_, true) => format!("结果是 {}。", plain(result)),
    }
}

/// The model's answer once a tool failed with `kind`.
pub fn answer_from_error(tool: &str, kind: &str, chinese: bool) -> String {
    if chinese {
        format!("抱歉，{tool} 工具出错了（{kind}）。")
    } else {
        format!("Sorry, the {tool} tool failed ({kind}).")
    }
}
