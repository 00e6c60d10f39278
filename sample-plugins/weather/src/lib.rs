use autoglm_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Args {
    /// City or place name, e.g. "Beijing".
    location: String,
}

#[derive(Serialize, JsonSchema)]
struct Weather {
    city: String,
    temperature: i32,
    condition: String,
}

const CONDITIONS: [&str; 6] = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"];

fn get_weather(args: Args) -> Result<Weather, ToolError> {
    let city = args.location.trim();
    if city.is_empty() {
        return Err(ToolError::invalid("location must name a place"));
    }
    // FNV-1a of the lower-cased name: the same place always has the same weather.
    let h = (city.to_lowercase().bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let temperature = (h % 46) as i32 - 10;
    let condition = CONDITIONS[(h >> 32) as usize % CONDITIONS.len()].to_string();
    Ok(Weather { city: city.to_string(), temperature, condition })
}

fn tools() -> Vec<Tool> {
    let about = "Current weather for a city: temperature in °C and the sky's condition.";
    vec![Tool::new("get_weather", about, get_weather).output::<Weather>().read_only()]
}

export_plugin!(tools);
