//! Units plugin: converts between units of length, mass, temperature, volume and time.

use std::fmt;

use Category::*;
use autoglm_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Args {
    /// The quantity to convert, in `from` units.
    value: f64,
    /// Unit of `value`: a symbol such as "km", "lb", "C", "gal", "h" or a name such as
    /// "miles" (case-insensitive; "c", "f" and "k" mean Celsius, Fahrenheit and kelvin).
    from: String,
    /// Unit to convert to, in the same category as `from`.
    to: String,
}

#[derive(Serialize, JsonSchema)]
struct Converted {
    /// The converted quantity; binary noise beyond 15 significant digits is rounded away.
    value: f64,
    /// Canonical symbol of the target unit.
    unit: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Length,
    Mass,
    Temperature,
    Volume,
    Time,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Length => "length",
            Category::Mass => "mass",
            Category::Temperature => "temperature",
            Category::Volume => "volume",
            Category::Time => "time",
        })
    }
}

/// A unit as an affine map onto its category's base unit: `base = (value + offset) * factor`.
///
/// The base units are m, kg, °C, L and s. Only temperatures have an offset; °C is their base
/// so that common conversions such as 32 °F → 0 °C do not cancel large offsets.
struct Unit {
    symbol: &'static str,
    category: Category,
    factor: f64,
    offset: f64,
    /// Other accepted spellings, already in the form `normalize` produces.
    aliases: &'static [&'static str],
}

const fn unit(
    symbol: &'static str,
    category: Category,
    factor: f64,
    aliases: &'static [&'static str],
) -> Unit {
    Unit { symbol, category, factor, offset: 0.0, aliases }
}

const KELVIN: Unit = Unit {
    symbol: "K",
    category: Temperature,
    factor: 1.0,
    offset: -273.15,
    aliases: &["kelvin", "kelvins"],
};

const POUND: f64 = 0.453_592_37;
const US_GALLON: f64 = 3.785_411_784;

const UNITS: &[Unit] = &[
    unit("m", Length, 1.0, &["meter", "meters", "metre", "metres"]),
    unit("km", Length, 1e3, &["kilometer", "kilometers", "kilometre", "kilometres"]),
    unit("cm", Length, 1e-2, &["centimeter", "centimeters", "centimetre", "centimetres"]),
    unit("mm", Length, 1e-3, &["millimeter", "millimeters", "millimetre", "millimetres"]),
    unit(
        "um",
        Length,
        1e-6,
        &[
            "µm",
            "μm",
            "micrometer",
            "micrometers",
            "micrometre",
            "micrometres",
            "micron",
            "microns",
        ],
    ),
    unit("nm", Length, 1e-9, &["nanometer", "nanometers", "nanometre", "nanometres"]),
    unit("mi", Length, 1_609.344, &["mile", "miles"]),
    unit("yd", Length, 0.9144, &["yard", "yards"]),
    unit("ft", Length, 0.3048, &["foot", "feet"]),
    unit("in", Length, 0.0254, &["inch", "inches"]),
    unit("nmi", Length, 1_852.0, &["nautical_mile", "nautical_miles"]),
    unit("kg", Mass, 1.0, &["kilogram", "kilograms", "kilo", "kilos"]),
    unit("g", Mass, 1e-3, &["gram", "grams", "gramme", "grammes"]),
    unit("mg", Mass, 1e-6, &["milligram", "milligrams"]),
    unit("t", Mass, 1e3, &["tonne", "tonnes", "metric_ton", "metric_tons"]),
    unit("lb", Mass, POUND, &["lbs", "pound", "pounds"]),
    unit("oz", Mass, POUND / 16.0, &["ounce", "ounces"]),
    unit("st", Mass, POUND * 14.0, &["stone", "stones"]),
    Unit {
        symbol: "C",
        category: Temperature,
        factor: 1.0,
        offset: 0.0,
        aliases: &["°c", "degc", "celsius", "centigrade", "degree_celsius", "degrees_celsius"],
    },
    Unit {
        symbol: "F",
        category: Temperature,
        factor: 5.0 / 9.0,
        offset: -32.0,
        aliases: &["°f", "degf", "fahrenheit", "degree_fahrenheit", "degrees_fahrenheit"],
    },
    KELVIN,
    unit("L", Volume, 1.0, &["liter", "liters", "litre", "litres"]),
    unit("mL", Volume, 1e-3, &["cc", "milliliter", "milliliters", "millilitre", "millilitres"]),
    unit(
        "m3",
        Volume,
        1e3,
        &["m^3", "m³", "cubic_meter", "cubic_meters", "cubic_metre", "cubic_metres"],
    ),
    unit("gal", Volume, US_GALLON, &["gallon", "gallons", "us_gal"]),
    unit("qt", Volume, US_GALLON / 4.0, &["quart", "quarts"]),
    unit("pt", Volume, US_GALLON / 8.0, &["pint", "pints"]),
    unit("cup", Volume, US_GALLON / 16.0, &["cups"]),
    unit("fl_oz", Volume, US_GALLON / 128.0, &["floz", "fluid_ounce", "fluid_ounces"]),
    unit("tbsp", Volume, US_GALLON / 256.0, &["tablespoon", "tablespoons"]),
    unit("tsp", Volume, US_GALLON / 768.0, &["teaspoon", "teaspoons"]),
    unit("s", Time, 1.0, &["sec", "secs", "second", "seconds"]),
    unit("ms", Time, 1e-3, &["msec", "millisecond", "milliseconds"]),
    unit("us", Time, 1e-6, &["µs", "μs", "microsecond", "microseconds"]),
    unit("ns", Time, 1e-9, &["nanosecond", "nanoseconds"]),
    unit("min", Time, 60.0, &["mins", "minute", "minutes"]),
    unit("h", Time, 3_600.0, &["hr", "hrs", "hour", "hours"]),
    unit("day", Time, 86_400.0, &["d", "days"]),
    unit("week", Time, 604_800.0, &["wk", "wks", "weeks"]),
    unit("year", Time, 31_557_600.0, &["y", "yr", "yrs", "years"]),
];

/// Lowercase, without dots, with runs of spaces or hyphens as one '_': "Fl. oz" → "fl_oz".
fn normalize(name: &str) -> String {
    let lower = name.trim().to_lowercase().replace('.', "");
    let words: Vec<&str> = lower.split(|c: char| c.is_whitespace() || c == '-').collect();
    words.into_iter().filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_")
}

fn lookup(name: &str) -> Result<&'static Unit, ToolError> {
    let key = normalize(name);
    UNITS
        .iter()
        .find(|u| u.symbol.to_lowercase() == key || u.aliases.contains(&key.as_str()))
        .ok_or_else(|| ToolError::invalid(format!("unknown unit '{name}'; {}", known_units())))
}

fn known_units() -> String {
    let lists: Vec<String> = [Length, Mass, Temperature, Volume, Time]
        .into_iter()
        .map(|category| {
            let symbols: Vec<&str> =
                UNITS.iter().filter(|u| u.category == category).map(|u| u.symbol).collect();
            format!("{category}: {}", symbols.join(", "))
        })
        .collect();
    format!("known units are {}", lists.join("; "))
}

/// `value` in `from` expressed in `to`.
fn apply(value: f64, from: &Unit, to: &Unit) -> f64 {
    let ratio = from.factor / to.factor;
    let result = (value + from.offset) * ratio - to.offset;
    // Every term is exact to 15 significant digits, so the result is exact to the 15th
    // digit of the largest term; rounding there drops binary noise such as
    // 211.99999999999997, and cancelled offsets (33.8 °F → 0.999999999999998 °C).
    let scale = [value * ratio, from.offset * ratio, to.offset]
        .into_iter()
        .fold(0.0, |max: f64, term| max.max(term.abs()));
    let places = 14.0 - scale.log10().floor();
    let rounded = if (0.0..=300.0).contains(&places) {
        format!("{result:.0$}", places as usize)
    } else {
        format!("{result:.14e}")
    };
    rounded.parse().unwrap_or(result)
}

fn convert(args: Args) -> Result<Converted, ToolError> {
    if !args.value.is_finite() {
        return Err(ToolError::invalid("value must be a finite number"));
    }
    let (from, to) = (lookup(&args.from)?, lookup(&args.to)?);
    if from.category != to.category {
        return Err(ToolError::invalid(format!(
            "cannot convert {} ({}) to {} ({})",
            from.symbol, from.category, to.symbol, to.category
        )));
    }
    if from.category == Temperature {
        let absolute_zero = apply(0.0, &KELVIN, from);
        if args.value < absolute_zero {
            return Err(ToolError::invalid(format!(
                "{} {} is below absolute zero ({absolute_zero} {})",
                args.value, from.symbol, from.symbol
            )));
        }
    }
    let value = apply(args.value, from, to);
    if !value.is_finite() {
        return Err(ToolError::failed(format!(
            "{:e} {} is too large to express in {}",
            args.value, from.symbol, to.symbol
        )));
    }
    // Adding zero turns -0 into 0.
    Ok(Converted { value: value + 0.0, unit: to.symbol.to_string() })
}

fn tools() -> Vec<Tool> {
    let about = "Convert a quantity between units of length, mass, temperature, volume or time \
                 (e.g. miles to km, °F to °C, cups to mL).";
    vec![Tool::new("convert", about, convert).output::<Converted>().read_only().idempotent()]
}

export_plugin!(tools);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: f64, from: &str, to: &str) -> Result<Converted, ToolError> {
        convert(Args { value, from: from.to_string(), to: to.to_string() })
    }

    fn conv(value: f64, from: &str, to: &str) -> f64 {
        run(value, from, to).unwrap_or_else(|e| panic!("{value} {from} -> {to}: {e:?}")).value
    }

    fn invalid(value: f64, from: &str, to: &str) -> String {
        match run(value, from, to) {
            Err(ToolError::InvalidArguments(message)) => message,
            other => panic!("{value} {from} -> {to}: expected invalid, got {:?}", other.err()),
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(conv(1.0, "mi", "km"), 1.609344);
        assert_eq!(conv(1.0, "ft", "in"), 12.0);
        assert_eq!(conv(3.0, "feet", "yd"), 1.0);
        assert_eq!(conv(1.0, "nmi", "m"), 1852.0);
        assert_eq!(conv(2.5, "KM", "meters"), 2500.0);
        assert_eq!(conv(1.0, "µm", "nm"), 1000.0);
    }

    #[test]
    fn masses() {
        assert_eq!(conv(1.0, "lb", "oz"), 16.0);
        assert_eq!(conv(1.0, "st", "lbs"), 14.0);
        assert_eq!(conv(1.0, "t", "kg"), 1000.0);
        assert_eq!(conv(1.0, "pound", "g"), 453.59237);
        assert_eq!(conv(500.0, "mg", "gram"), 0.5);
    }

    #[test]
    fn temperatures_are_affine() {
        assert_eq!(conv(100.0, "C", "F"), 212.0);
        assert_eq!(conv(32.0, "°F", "celsius"), 0.0);
        assert_eq!(conv(-40.0, "f", "c"), -40.0);
        assert_eq!(conv(0.0, "C", "K"), 273.15);
        assert_eq!(conv(0.0, "kelvin", "F"), -459.67);
        assert_eq!(conv(-273.15, "C", "K"), 0.0);
        assert_eq!(conv(-459.67, "F", "K"), 0.0);
        assert_eq!(conv(273.15, "K", "F"), 32.0);
        assert_eq!(conv(33.8, "F", "C"), 1.0);
        assert_eq!(conv(37.0, "C", "F"), 98.6);
    }

    #[test]
    fn volumes() {
        assert_eq!(conv(1.0, "gal", "qt"), 4.0);
        assert_eq!(conv(1.0, "cup", "tbsp"), 16.0);
        assert_eq!(conv(1.0, "tbsp", "tsp"), 3.0);
        assert_eq!(conv(1.0, "fl oz", "mL"), 29.5735295625);
        assert_eq!(conv(1.0, "m3", "L"), 1000.0);
        assert_eq!(conv(2.0, "pt", "quart"), 1.0);
    }

    #[test]
    fn times() {
        assert_eq!(conv(90.0, "min", "h"), 1.5);
        assert_eq!(conv(1.0, "year", "days"), 365.25);
        assert_eq!(conv(2.0, "weeks", "day"), 14.0);
        assert_eq!(conv(1.0, "s", "ms"), 1000.0);
        assert_eq!(conv(1500.0, "ns", "us"), 1.5);
    }

    #[test]
    fn result_carries_the_canonical_symbol() {
        let result = run(1.0, "kilometres", "Miles").unwrap();
        assert_eq!(result.unit, "mi");
        assert_eq!(run(1.0, "l", "MILLILITER").unwrap().unit, "mL");
    }

    #[test]
    fn round_trips() {
        let cases = [
            (123.456, "km", "mi"),
            (98.6, "F", "C"),
            (7.25, "oz", "g"),
            (3.3, "gal", "L"),
            (1234.5, "s", "week"),
            (0.001, "nm", "ft"),
        ];
        // The answer is rounded to 15 digits, so a round trip is exact to about 14.
        for (value, from, to) in cases {
            let back = conv(conv(value, from, to), to, from);
            assert!((back - value).abs() <= value.abs() * 1e-14, "{from} <-> {to}: {back}");
        }
    }

    #[test]
    fn every_pair_round_trips() {
        for (a, b) in UNITS.iter().flat_map(|a| UNITS.iter().map(move |b| (a, b))) {
            if a.category != b.category {
                continue;
            }
            for value in [1.0, 42.5, 1234.5678] {
                let back = conv(conv(value, a.symbol, b.symbol), b.symbol, a.symbol);
                // Temperature offsets make the error absolute rather than relative.
                let scale = if a.category == Temperature { 500.0 } else { value };
                let (from, to) = (a.symbol, b.symbol);
                assert!((back - value).abs() <= scale * 1e-14, "{value} {from} <-> {to}: {back}");
            }
        }
    }

    #[test]
    fn every_spelling_is_unique() {
        let mut keys: Vec<String> = UNITS
            .iter()
            .flat_map(|u| {
                std::iter::once(u.symbol.to_lowercase())
                    .chain(u.aliases.iter().map(|a| a.to_string()))
            })
            .collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total);
        for key in &keys {
            assert_eq!(&normalize(key), key, "alias must be normalized");
        }
    }

    #[test]
    fn unknown_units_are_invalid() {
        let message = invalid(1.0, "furlong", "m");
        assert!(message.starts_with("unknown unit 'furlong'"), "{message}");
        assert!(message.contains("length: m, km") && message.contains("time: s, ms"));
        assert!(invalid(1.0, "m", "ton").starts_with("unknown unit 'ton'"));
    }

    #[test]
    fn categories_must_match() {
        assert_eq!(invalid(1.0, "kg", "m"), "cannot convert kg (mass) to m (length)");
        assert_eq!(invalid(1.0, "min", "m"), "cannot convert min (time) to m (length)");
    }

    #[test]
    fn bad_values_are_invalid() {
        assert_eq!(invalid(f64::NAN, "m", "km"), "value must be a finite number");
        assert_eq!(invalid(f64::INFINITY, "m", "km"), "value must be a finite number");
        assert!(invalid(-300.0, "C", "F").contains("below absolute zero (-273.15 C)"));
        assert!(invalid(-1.0, "K", "C").contains("below absolute zero (0 K)"));
        assert!(invalid(-460.0, "F", "K").contains("below absolute zero (-459.67 F)"));
    }

    #[test]
    fn overflow_fails() {
        assert!(matches!(run(1e308, "km", "nm"), Err(ToolError::Failed(_))));
    }
}
