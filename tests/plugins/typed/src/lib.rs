//! A component of plain typed exports, for the host's reflection tests.

wit_bindgen::generate!({ world: "typed", path: "wit" });

use exports::test::typed::shapes::{self, Shape};

struct Typed;

impl Guest for Typed {
    fn echo(value: Everything) -> Everything {
        value
    }

    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn divide(a: f64, b: f64) -> Result<f64, String> {
        match b == 0.0 {
            true => Err(format!("cannot divide {a} by zero")),
            false => Ok(a / b),
        }
    }

    fn pick(n: u32) -> Item {
        match n {
            0 => Item::Nothing,
            1 => Item::Text("one".into()),
            n => Item::Number(n),
        }
    }

    fn crash() {
        std::process::abort()
    }
}

struct Counter(u32);

impl shapes::GuestCounter for Counter {
    fn new(start: u32) -> Self {
        Counter(start)
    }

    fn get(&self) -> u32 {
        self.0
    }
}

impl shapes::Guest for Typed {
    type Counter = Counter;

    fn area(shape: Shape) -> f64 {
        match shape {
            Shape::Circle(r) => std::f64::consts::PI * r * r,
            Shape::Rect(p) => (p.x * p.y).abs(),
            Shape::Empty => 0.0,
        }
    }

    fn make_counter(start: u32) -> shapes::Counter {
        shapes::Counter::new(Counter(start))
    }
}

export!(Typed);
