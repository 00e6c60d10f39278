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
        // Places of two and three words, so that the whole name is copied ("Buenos Aires").
        match roll {
            30..=54 => self.random_word(),
            55..=72 => self.made_up_name(),
            73..=92 => format!("{} {}", self.made_up_name(), self.made_up_name()),
            _ => format!("{} {} {}", self.made_up_name(), self.random_word(), self.made_up_name()),
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
        let pattern = if chinese {
            split_pick(&mut self.rng, split, zh, 2)
        } else {
            split_pick(&mut self.rng, split, en, 2)
        };
        match split {
            Split::Train => self.vary(pattern, chinese),
            Split::Heldout => pattern.to_string(),
        }
    }

    /// A training pattern as people type it: often with a greeting or a "please" around it,
    /// sometimes in lower case or with two letters swapped. Only the pattern's own words
    /// change (before the values go in), so the call it asks for stays the same. This turns
    /// the few patterns per tool into many sentences, so the model keys on what is asked
    /// rather than on a memorised sentence.
    fn vary(&mut self, pattern: &str, chinese: bool) -> String {
        const OPENINGS: &[&str] = &[
            "Hey, ",
            "Hi! ",
            "Please ",
            "Quick one: ",
            "Excuse me, ",
            "Sorry to bother you, ",
            "Hello assistant, ",
            "I have a request. ",
            "Okay, ",
            "So, ",
            "Um, ",
            "Right, ",
        ];
        const CLOSINGS: &[&str] =
            &[" please", " Thanks!", ", thank you.", " (thanks)", " :)", ", if you can.", " ty"];
        const OPENINGS_ZH: &[&str] =
            &["你好，", "请问", "麻烦", "劳驾，", "嗨，", "那个，", "帮个忙，"];
        const CLOSINGS_ZH: &[&str] = &["，谢谢", "。谢谢！", "，麻烦了", "，多谢", "～"];
        let mut text = pattern.to_string();
        if self.rng.random_bool(0.35) && !text.starts_with("Please") {
            let opening = if chinese { OPENINGS_ZH } else { OPENINGS };
            let opening = *opening.choose(&mut self.rng).unwrap();
            // "I" stays upper case; the pattern's first word otherwise follows the opening.
            if !chinese && !text.starts_with("I ") && !text.starts_with("I'") {
                text = lower_first(&text);
            }
            text = format!("{opening}{text}");
        }
        if self.rng.random_bool(0.25) {
            let closing = if chinese { CLOSINGS_ZH } else { CLOSINGS };
            let closing = *closing.choose(&mut self.rng).unwrap();
            let body = text.trim_end_matches(['?', '.', '!', '？', '。']);
            let mark =
                if closing.ends_with(['!', '.', ')', '～']) { "" } else { &text[body.len()..] };
            text = format!("{body}{closing}{mark}");
        }
        if !chinese && self.rng.random_bool(0.15) {
            text = lower_first(&text);
        }
        if !chinese && self.rng.random_bool(0.12) {
            text = self.typo(&text);
        }
        text
    }

    /// `text` with two neighbouring letters of one of its words swapped, never inside a
    /// `{…}` slot (the values are copied and must stay exact).
    fn typo(&mut self, text: &str) -> String {
        let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
        let candidates: Vec<usize> = (0..words.len())
            .filter(|&i| words[i].len() >= 4 && words[i].chars().all(|c| c.is_ascii_alphabetic()))
            .collect();
        let Some(&i) = candidates.choose(&mut self.rng) else { return text.to_string() };
        let mut letters: Vec<char> = words[i].chars().collect();
        let at = self.rng.random_range(1..letters.len() - 1);
        letters.swap(at, at + 1);
        words[i] = letters.into_iter().collect();
        words.join(" ")
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
                "{} weather forecast",
                "Will it be sunny in {}?",
                "Should I wear a coat in {} today?",
                "What are the conditions like in {}?",
                "Is it cold in {} at the moment?",
                "Give me the current weather of {}",
                "forecast for {}",
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
                "{}冷不冷？",
                "{}需要带伞吗？",
                "{}的气温是多少？",
                "告诉我{}的天气情况",
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
                "Work out {}",
                "what's {}",
                "Tell me the result of {}",
                "Can you do the math on {}?",
                "Crunch {} for me",
                "I need {} calculated",
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
                "{} 算出来是多少？",
                "求 {}",
                "帮忙计算一下：{}",
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
                "Express {v} {f} in {t}",
                "{v} {f} equals how many {t}?",
                "Could you change {v} {f} into {t}?",
                "Give me {v} {f} in {t}",
                "Turn {v} {f} into {t} for me",
                "What's {v} {f} expressed in {t}?",
            ],
            &[
                "把 {v} {f} 换算成 {t}",
                "{v} {f} 等于多少 {t}？",
                "{v} {f} 是多少 {t}",
                "请把 {v} {f} 转换为 {t}",
                "{v} {f} 合多少 {t}？",
                "{v} {f} 折算成 {t} 是多少",
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
                "Jot down {t} under the name {n}",
                "Add a note {n}: {t}",
                "Keep a note named {n} that reads {t}",
                "New note {n} with {t}",
                "Record {t} as note {n}",
                "Put {t} into a note called {n}",
                "Make a note titled {n} that says {t}",
            ],
            &[
                "保存笔记 {n}：{t}",
                "新建一个叫 {n} 的笔记，内容是 {t}",
                "记下来，笔记名 {n}，内容 {t}",
                "记一条笔记叫 {n}：{t}",
                "帮我记下 {t}，名字叫 {n}",
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
                    "Look at my note {}",
                    "Fetch the note {}",
                    "What's in note {}?",
                    "Let me see the note {}",
                    "Read back the note named {}",
                    "Show note {} to me",
                    "What did I write in the note {}?",
                    "Pull up my {} note",
                ],
                &[
                    "读一下笔记 {}",
                    "打开笔记 {}",
                    "笔记 {} 里写了什么？",
                    "给我看看笔记 {}",
                    "查看笔记 {}",
                    "笔记 {} 写的是什么？",
                    "念一下笔记 {}",
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
                    "Trash note {}",
                    "Drop the note {}",
                    "Please delete {} from my notes",
                    "Clear out the note {}",
                    "I no longer need the note {}, delete it",
                    "Wipe the note named {}",
                ],
                &[
                    "删除笔记 {}",
                    "把笔记 {} 删掉",
                    "移除笔记 {}",
                    "删掉 {} 这条笔记",
                    "把 {} 这条笔记删除",
                    "笔记 {} 不要了",
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
                "Do I have any notes?",
                "Which notes exist?",
                "What did I jot down?",
                "Enumerate my notes",
                "Anything in my notes?",
                "Show my saved notes",
                "What notes are there?",
                "List everything I've noted",
                "How many notes have I got?",
                "my notes",
                "What have I saved?",
                "Show me every note I saved",
                "What have I written down so far?",
                "Give me an overview of my notes",
            ],
            &[
                "列出我的笔记",
                "我有哪些笔记？",
                "显示所有笔记",
                "看看保存了哪些笔记",
                "我保存过什么笔记？",
                "笔记都有哪些？",
                "看看我的笔记列表",
                "有没有笔记？",
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
                    "Count how many words \"{}\" has",
                    "number of words: {}",
                    "How many words is {}?",
                    "Words in this sentence: {}",
                    "What's the word count of \"{}\"?",
                    "Tell me the number of words in {}",
                    "How long is this text in words: {}",
                    "Give me a word count for \"{}\"",
                ],
                &[
                    "统计字数：{}",
                    "这段话有多少个词：{}",
                    "数一下 {} 有几个词",
                    "帮我统计 \"{}\" 的词数",
                    "数数 {} 的词数",
                    "\"{}\" 里有几个单词？",
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
                    "Make {} URL-friendly",
                    "Slug for {} please",
                    "What would the slug for \"{}\" be?",
                    "Turn {} into a URL path segment",
                    "slug: {}",
                    "Generate a URL slug for \"{}\"",
                    "I need a slug for the title {}",
                    "Convert {} to a slug",
                ],
                &[
                    "把 {} 转成 URL slug",
                    "生成 {} 的 slug",
                    "给 \"{}\" 做一个网址别名",
                    "请把 {} 变成 slug",
                    "把 {} 做成网址路径",
                    "给 {} 生成一个 slug",
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
                    "Put {} into base64",
                    "How is {} written in base64?",
                    "Encode this text as base64: {}",
                    "base64 please: {}",
                    "Wrap {} in base64",
                    "Give me the base64 encoding of {}",
                    "Please base64-encode \"{}\"",
                    "Turn {} into base64",
                ],
                &[
                    "把 {} 编码成 base64",
                    "{} 的 base64 是什么？",
                    "base64 编码：{}",
                    "请对 \"{}\" 做 base64 编码",
                    "{} 用 base64 编码是什么？",
                    "编码成 base64：{}",
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
                    "Digest {} with SHA-256",
                    "What's the sha256 hash for \"{}\"?",
                    "SHA-256 please: {}",
                    "Get the SHA256 checksum of {}",
                    "Hash this: {}",
                    "Calculate sha256: {}",
                    "I need the SHA-256 digest of \"{}\"",
                    "Fingerprint {} with SHA-256",
                ],
                &[
                    "计算 {} 的 SHA-256",
                    "{} 的 sha256 哈希是多少？",
                    "帮我算 \"{}\" 的 sha256",
                    "对 {} 做 SHA-256",
                    "{} 的哈希值（sha256）",
                    "用 SHA-256 给 {} 算个哈希",
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
                "Convert {} from base64 to text",
                "What's the plain text behind {}?",
                "Turn this base64 back into text: {}",
                "Read this base64 for me: {}",
                "I got {} - what does it say?",
                "Undo the base64 on {}",
                "base64 to text: {}",
                "What is {} when decoded?",
                "Reverse the base64 encoding of {}",
                "Can you decode {}?",
                "What message is hidden in the base64 {}?",
                "Please decode the base64 string {}",
                "Unpack this base64 for me: {}",
                "Translate {} out of base64",
            ],
            &[
                "解码 base64：{}",
                "{} 解码后是什么？",
                "把 {} 从 base64 解码",
                "base64 解码 {}",
                "把这个 base64 变回文字：{}",
                "这串 base64 写的是什么：{}",
                "还原 base64：{}",
                "{} 是 base64，原文是什么？",
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
        if self.rng.random_bool(0.6) { self.paraphrased() } else { self.named_after_request() }
    }

    /// An invented tool whose name and description share few words with the requests for
    /// it (`define(word): Explain what a word means` for "What does 'ossify' mean?"), often a
    /// single word for a name: the model must read what a tool does, not match its name.
    /// None of them fetches a web page: that is the held-out plugin's skill.
    fn paraphrased(&mut self) -> (Invented, Drawn) {
        // name, its argument, description, the kind of value, requests ({} is the value).
        type Family =
            (&'static str, &'static str, &'static str, ValueKind, &'static [&'static str]);
        use ValueKind::*;
        const FAMILIES: &[Family] = &[
            (
                "define",
                "word",
                "Explain what a word means",
                Word,
                &[
                    "What does the word {} mean?",
                    "Meaning of {}?",
                    "I keep hearing \"{}\" - what is that?",
                ],
            ),
            (
                "translate",
                "text",
                "Render text in French",
                Words,
                &[
                    "How do you say {} in French?",
                    "{} - in French please",
                    "What's the French for {}?",
                ],
            ),
            (
                "quote",
                "symbol",
                "Latest share price for a ticker symbol",
                Code,
                &["How is {} stock doing?", "What's {} trading at?", "Share price of {}?"],
            ),
            (
                "ping",
                "host",
                "Check whether a server answers on the network",
                Domain,
                &["Is {} up?", "Can you reach {}?", "Is the server {} responding?"],
            ),
            (
                "shorten",
                "url",
                "Make a short link for a long address",
                Url,
                &[
                    "Give me a short link for {}",
                    "Shrink this link: {}",
                    "{} is too long, make it shorter",
                ],
            ),
            (
                "whois",
                "domain",
                "Registration details of an internet domain",
                Domain,
                &["Who owns {}?", "Who registered {}?", "When does {} expire?"],
            ),
            (
                "clock",
                "city",
                "Local time somewhere in the world",
                City,
                &["What time is it in {}?", "Is it night in {} now?", "Current time in {}"],
            ),
            (
                "spell",
                "word",
                "Check that a word is written correctly",
                Word,
                &["Is {} spelled right?", "Did I spell {} correctly?", "Spelling check: {}"],
            ),
            (
                "backwards",
                "text",
                "Reverse the characters of a text",
                Words,
                &[
                    "Write {} backwards",
                    "Mirror the letters of {}",
                    "What is {} read from the end?",
                ],
            ),
            (
                "shout",
                "text",
                "Put every letter of a text in capitals",
                Words,
                &["Make {} all caps", "Capitalise everything in {}", "{} in upper case please"],
            ),
            (
                "rhymes",
                "word",
                "Find words that sound alike at the end",
                Word,
                &["What rhymes with {}?", "Give me a rhyme for {}", "Words that rhyme with {}?"],
            ),
            (
                "play",
                "query",
                "Start music from the streaming library",
                Name,
                &["Put on some {}", "I want to listen to {}", "Can I hear {}?"],
            ),
            (
                "remind",
                "message",
                "Set an alert for later",
                Words,
                &["Remind me to {}", "Don't let me forget to {}", "Set a reminder: {}"],
            ),
            (
                "locate",
                "code",
                "Where a shipment is right now",
                Code,
                &[
                    "Where is my package {}?",
                    "Has parcel {} arrived yet?",
                    "Status of my delivery {}",
                ],
            ),
            (
                "qr",
                "text",
                "Draw a scannable square code for some text",
                Words,
                &["Make a QR code of {}", "I need a QR for {}", "Turn {} into a QR image"],
            ),
            (
                "coords",
                "place",
                "Latitude and longitude of a place",
                City,
                &["Where on the map is {}?", "GPS position of {}", "Latitude of {}?"],
            ),
            (
                "lyrics",
                "song",
                "The words of a song",
                Name,
                &["What are the words to {}?", "How does the song {} go?", "Sing {} for me"],
            ),
            (
                "synonyms",
                "word",
                "Other words with the same meaning",
                Word,
                &[
                    "Another word for {}?",
                    "What can I say instead of {}?",
                    "Give me alternatives to {}",
                ],
            ),
            (
                "population",
                "city",
                "How many people live in a city",
                City,
                &["How many people live in {}?", "How big is {}?", "Inhabitants of {}?"],
            ),
            (
                "book",
                "title",
                "Reserve a table at a restaurant",
                Name,
                &["Get me a table at {}", "I'd like to eat at {} tonight", "Reserve {} for two"],
            ),
        ];
        let (name, param, description, kind, requests) = *FAMILIES.choose(&mut self.rng).unwrap();
        let value = match kind {
            Word => self.random_word().to_lowercase(),
            Words => self.words(3),
            Name => self.made_up_name(),
            Code => self.random_word().to_uppercase(),
            Domain => format!(
                "{}.{}",
                self.random_word().to_lowercase(),
                ["com", "org", "net", "io"].choose(&mut self.rng).unwrap()
            ),
            Url => format!(
                "https://{}.com/{}/{}",
                self.random_word().to_lowercase(),
                self.random_word().to_lowercase(),
                self.rng.random_range(100..100000)
            ),
            City => self.city(false),
        };
        let tool =
            Invented { name: name.into(), description: description.into(), param: param.into() };
        let request = requests.choose(&mut self.rng).unwrap().replace("{}", &value);
        (tool, (request, call(name, json!({ param: value }))))
    }

    /// An invented tool named after the words of its request (`track_parcel` for "track the
    /// parcel"), with a request for it.
    fn named_after_request(&mut self) -> (Invented, Drawn) {
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
                "Nice to meet you",
                "Good night",
                "What's your name?",
                "Are you a robot?",
                "ok thanks",
                "That's all for now",
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
                "很高兴认识你",
                "晚安",
                "你叫什么名字？",
                "你都能帮我做些什么？",
                "太感谢了",
            ],
            chinese,
        )
    }
}

/// What an invented tool's argument looks like.
#[derive(Clone, Copy)]
enum ValueKind {
    Word,
    Words,
    Name,
    Code,
    Domain,
    Url,
    City,
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

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
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
        // Opaque strings come last, after a colon, with no full stop glued to them: the
        // model copies them whole rather than ending them on a "." it expects.
        ("slugify", false) => format!("The slug is: {}", plain(result)),
        ("slugify", true) => format!("slug 是：{}", plain(result)),
        ("sha256", false) => format!("The SHA-256 is: {}", plain(result)),
        ("sha256", true) => format!("SHA-256 是：{}", plain(result)),
        ("base64_encode", false) => format!("In base64 that is: {}", plain(result)),
        ("base64_encode", true) => format!("base64 编码是：{}", plain(result)),
        ("base64_decode", false) => format!("It decodes to: {}", plain(result)),
        ("base64_decode", true) => format!("解码结果是：{}", plain(result)),
        (_, false) => format!("The result is: {}", plain(result)),
        (_, true) => format!("结果是：{}", plain(result)),
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
