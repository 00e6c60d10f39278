//! Calculator plugin: evaluates arithmetic expressions with a recursive-descent parser.

use autoglm_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Args {
    /// Arithmetic expression, e.g. "2 * (3 + 4)^2 / sqrt(16)". Operators + - * / % ^
    /// (power, right-associative); constants pi and e; functions sqrt, abs, sin, cos, tan,
    /// asin, acos, atan (radians), ln, log (base 10), log2, exp, floor, ceil, round, min, max.
    expression: String,
}

/// Deeper nesting is refused so hostile input cannot overflow the parser's stack.
const MAX_DEPTH: usize = 256;

/// A function of one argument.
type Function = fn(f64) -> f64;

/// Functions of one argument, by name.
const FUNCTIONS: &[(&str, Function)] = &[
    ("sqrt", f64::sqrt),
    ("abs", f64::abs),
    ("sin", f64::sin),
    ("cos", f64::cos),
    ("tan", f64::tan),
    ("asin", f64::asin),
    ("acos", f64::acos),
    ("atan", f64::atan),
    ("ln", f64::ln),
    ("log", f64::log10),
    ("log2", f64::log2),
    ("exp", f64::exp),
    ("floor", f64::floor),
    ("ceil", f64::ceil),
    ("round", f64::round),
];

const KNOWN_NAMES: &str = "pi, e, sqrt, abs, sin, cos, tan, asin, acos, atan, ln, log, log2, \
                           exp, floor, ceil, round, min, max";

fn evaluate(args: Args) -> Result<f64, ToolError> {
    if args.expression.trim().is_empty() {
        return Err(ToolError::invalid("expression is empty"));
    }
    Parser::new(&args.expression).run()
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Num(f64),
    Name(String),
    Sym(char),
    /// A character no token starts with; reported only when the parser reaches it.
    Bad(char),
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// 1-based column, counted in characters.
    col: usize,
}

fn lex(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let col = i + 1;
        let next = chars.get(i + 1).copied();
        let kind = if c.is_whitespace() {
            i += 1;
            continue;
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let end = number_end(&chars, i);
            let text: String = chars[i..end].iter().collect();
            i = end;
            text.parse().map_or(Kind::Bad(c), Kind::Num)
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = (i..chars.len())
                .find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '_'))
                .unwrap_or(chars.len());
            let name = chars[i..end].iter().collect();
            i = end;
            Kind::Name(name)
        } else if c == '*' && next == Some('*') {
            // Models often write Python's power operator.
            i += 2;
            Kind::Sym('^')
        } else {
            i += 1;
            if "+-*/%^(),".contains(c) { Kind::Sym(c) } else { Kind::Bad(c) }
        };
        tokens.push(Token { kind, col });
    }
    tokens.push(Token { kind: Kind::End, col: chars.len() + 1 });
    tokens
}

/// Where the number starting at `start` ends: digits, an optional fraction and exponent.
fn number_end(chars: &[char], start: usize) -> usize {
    let digits = |from: usize| {
        (from..chars.len()).find(|&j| !chars[j].is_ascii_digit()).unwrap_or(chars.len())
    };
    let mut end = digits(start);
    if chars.get(end) == Some(&'.') {
        end = digits(end + 1);
    }
    if matches!(chars.get(end), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(end + 1), Some('+' | '-')));
        // Without digits the `e` is not an exponent; it is left for the parser to reject.
        if chars.get(end + 1 + sign).is_some_and(char::is_ascii_digit) {
            end = digits(end + 1 + sign);
        }
    }
    end
}

fn syntax(col: usize, message: impl std::fmt::Display) -> ToolError {
    ToolError::failed(format!("syntax error at column {col}: {message}"))
}

/// "expected `expected`, found …", or "unexpected character" when that is the real problem.
fn unexpected(token: &Token, expected: &str) -> ToolError {
    let found = match &token.kind {
        Kind::Bad(c) => return syntax(token.col, format!("unexpected character '{c}'")),
        Kind::Num(v) => format!("number {v}"),
        Kind::Name(name) => format!("'{name}'"),
        Kind::Sym(c) => format!("'{c}'"),
        Kind::End => "end of input".to_string(),
    };
    syntax(token.col, format!("expected {expected}, found {found}"))
}

/// Evaluates while it parses, so long operator chains need no recursion or tree.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    /// The first arithmetic failure; held back so a syntax error anywhere is reported instead.
    math_error: Option<String>,
}

impl Parser {
    fn new(source: &str) -> Self {
        Parser { tokens: lex(source), pos: 0, depth: 0, math_error: None }
    }

    fn run(mut self) -> Result<f64, ToolError> {
        let value = self.expression()?;
        let token = self.peek();
        match token.kind {
            Kind::End => {}
            Kind::Sym(')') => return Err(syntax(token.col, "unmatched ')'")),
            _ => return Err(unexpected(token, "an operator or end of input")),
        }
        if let Some(message) = self.math_error {
            return Err(ToolError::failed(message));
        }
        // Adding zero turns -0 into 0, which reads better as a JSON answer.
        Ok(value + 0.0)
    }

    fn peek(&self) -> &Token {
        // `lex` always ends with `End`, and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::End {
            self.pos += 1;
        }
        token
    }

    /// The operator symbol at the cursor, if it is one of `ops`, with its column.
    fn operator(&mut self, ops: &str) -> Option<(char, usize)> {
        match self.peek().kind {
            Kind::Sym(c) if ops.contains(c) => Some((c, self.advance().col)),
            _ => None,
        }
    }

    fn fail(&mut self, message: impl FnOnce() -> String) {
        self.math_error.get_or_insert_with(message);
    }

    fn finite(&mut self, value: f64, col: usize, what: &str) -> f64 {
        if !value.is_finite() {
            self.fail(|| {
                format!(
                    "the result is not a finite real number: {what} at column {col} \
                     is undefined or too large"
                )
            });
        }
        value
    }

    fn expression(&mut self) -> Result<f64, ToolError> {
        let mut value = self.term()?;
        while let Some((op, col)) = self.operator("+-") {
            let rhs = self.term()?;
            let result = if op == '+' { value + rhs } else { value - rhs };
            value = self.finite(result, col, &format!("'{op}'"));
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, ToolError> {
        let mut value = self.unary()?;
        while let Some((op, col)) = self.operator("*/%") {
            let rhs = self.unary()?;
            if op != '*' && rhs == 0.0 {
                self.fail(|| "division by zero".to_string());
            }
            let result = match op {
                '*' => value * rhs,
                '/' => value / rhs,
                _ => value % rhs,
            };
            value = self.finite(result, col, &format!("'{op}'"));
        }
        Ok(value)
    }

    /// Every recursive path passes through here, so this is where depth is limited.
    fn unary(&mut self) -> Result<f64, ToolError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let col = self.peek().col;
            return Err(syntax(col, format!("expression nests deeper than {MAX_DEPTH} levels")));
        }
        let value = match self.operator("+-") {
            Some(('-', _)) => -self.unary()?,
            Some(_) => self.unary()?,
            None => self.power()?,
        };
        self.depth -= 1;
        Ok(value)
    }

    /// The exponent is parsed as a unary, so `2^-1` works, `2^3^2` is `2^(3^2)`,
    /// and `-2^2` (unary minus applied above this level) is `-(2^2)`.
    fn power(&mut self) -> Result<f64, ToolError> {
        let base = self.primary()?;
        match self.operator("^") {
            Some((_, col)) => {
                let exponent = self.unary()?;
                Ok(self.finite(base.powf(exponent), col, "'^'"))
            }
            None => Ok(base),
        }
    }

    fn primary(&mut self) -> Result<f64, ToolError> {
        let token = self.advance();
        match token.kind {
            Kind::Num(value) => Ok(self.finite(value, token.col, "the number")),
            Kind::Sym('(') => {
                let value = self.expression()?;
                self.close("an operator or ')'")?;
                Ok(value)
            }
            Kind::Name(name) => self.name(&name, token.col),
            _ => Err(unexpected(&token, "a number, a name or '('")),
        }
    }

    fn close(&mut self, expected: &str) -> Result<(), ToolError> {
        match self.operator(")") {
            Some(_) => Ok(()),
            None => Err(unexpected(self.peek(), expected)),
        }
    }

    fn name(&mut self, name: &str, col: usize) -> Result<f64, ToolError> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "pi" => return Ok(std::f64::consts::PI),
            "e" => return Ok(std::f64::consts::E),
            _ => {}
        }
        let function = FUNCTIONS.iter().find(|(n, _)| *n == lower).map(|&(_, f)| f);
        if function.is_none() && lower != "min" && lower != "max" {
            return Err(syntax(
                col,
                format!("unknown name '{name}'; expected one of {KNOWN_NAMES}"),
            ));
        }
        if self.operator("(").is_none() {
            return Err(unexpected(self.peek(), &format!("'(' after {lower}")));
        }
        let args = self.arguments()?;
        let value = match function {
            Some(f) if args.len() == 1 => f(args[0]),
            Some(_) => {
                let count = args.len();
                return Err(syntax(col, format!("{lower} takes 1 argument, found {count}")));
            }
            None if args.is_empty() => {
                return Err(syntax(col, format!("{lower} takes at least 1 argument, found 0")));
            }
            None if lower == "min" => args.into_iter().fold(f64::INFINITY, f64::min),
            None => args.into_iter().fold(f64::NEG_INFINITY, f64::max),
        };
        Ok(self.finite(value, col, &lower))
    }

    /// Comma-separated arguments after '(' up to and including ')'.
    fn arguments(&mut self) -> Result<Vec<f64>, ToolError> {
        let mut args = Vec::new();
        if self.operator(")").is_some() {
            return Ok(args);
        }
        loop {
            args.push(self.expression()?);
            if self.operator(",").is_none() {
                self.close("an operator, ',' or ')'")?;
                return Ok(args);
            }
        }
    }
}

fn tools() -> Vec<Tool> {
    let about = "Evaluate an arithmetic expression (+ - * / % ^, parentheses, pi, e, \
                 sqrt, trig in radians, ln, log, min, max, …) and return the number.";
    vec![Tool::new("evaluate", about, evaluate).read_only().idempotent()]
}

export_plugin!(tools);

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expression: &str) -> Result<f64, ToolError> {
        evaluate(Args { expression: expression.to_string() })
    }

    fn value(expression: &str) -> f64 {
        eval(expression).unwrap_or_else(|e| panic!("{expression}: {e:?}"))
    }

    fn failure(expression: &str) -> String {
        match eval(expression) {
            Err(ToolError::Failed(message)) => message,
            other => panic!("{expression}: expected a failure, got {other:?}"),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn numbers() {
        assert_eq!(value("42"), 42.0);
        assert_eq!(value("3.25"), 3.25);
        assert_eq!(value(".5"), 0.5);
        assert_eq!(value("1e3"), 1000.0);
        assert_eq!(value("2.5E-2"), 0.025);
        assert_eq!(value("1e+2"), 100.0);
    }

    #[test]
    fn precedence() {
        assert_eq!(value("2 + 3 * 4"), 14.0);
        assert_eq!(value("(2 + 3) * 4"), 20.0);
        assert_eq!(value("2 * 3 ^ 2"), 18.0);
        assert_eq!(value("10 - 4 / 2"), 8.0);
        assert_eq!(value("7 % 4 + 1"), 4.0);
        assert_eq!(value("  1+\t2 \n"), 3.0);
    }

    #[test]
    fn associativity() {
        assert_eq!(value("10 - 4 - 3"), 3.0);
        assert_eq!(value("64 / 4 / 2"), 8.0);
        assert_eq!(value("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(value("2 ** 3 ** 2"), 512.0);
    }

    #[test]
    fn unary_operators() {
        assert_eq!(value("-2 ^ 2"), -4.0);
        assert_eq!(value("(-2) ^ 2"), 4.0);
        assert_eq!(value("2 ^ -1"), 0.5);
        assert_eq!(value("--3"), 3.0);
        assert_eq!(value("+-+3"), -3.0);
        assert_eq!(value("4 * -2"), -8.0);
        assert_eq!(value("-0").to_bits(), 0.0_f64.to_bits());
    }

    #[test]
    fn constants_and_functions() {
        assert_eq!(value("pi"), std::f64::consts::PI);
        assert_eq!(value("E"), std::f64::consts::E);
        assert_eq!(value("sqrt(16)"), 4.0);
        assert_eq!(value("abs(-3)"), 3.0);
        assert!(close(value("sin(pi / 2)"), 1.0));
        assert!(close(value("cos(0)"), 1.0));
        assert!(close(value("tan(pi / 4)"), 1.0));
        assert!(close(value("asin(1)"), std::f64::consts::FRAC_PI_2));
        assert!(close(value("acos(1)"), 0.0));
        assert!(close(value("atan(1) * 4"), std::f64::consts::PI));
        assert!(close(value("ln(e)"), 1.0));
        assert_eq!(value("log(1000)"), 3.0);
        assert_eq!(value("log2(8)"), 3.0);
        assert!(close(value("exp(1)"), std::f64::consts::E));
        assert_eq!(value("floor(-2.5)"), -3.0);
        assert_eq!(value("ceil(2.1)"), 3.0);
        assert_eq!(value("round(2.5)"), 3.0);
        assert_eq!(value("min(3)"), 3.0);
        assert_eq!(value("max(1, 5, 2)"), 5.0);
        assert_eq!(value("min(4, -1 * 2, sqrt(9))"), -2.0);
        assert_eq!(value("SQRT(4)"), 2.0);
    }

    #[test]
    fn empty_expression_is_invalid() {
        assert!(matches!(eval(""), Err(ToolError::InvalidArguments(_))));
        assert!(matches!(eval("  \n"), Err(ToolError::InvalidArguments(_))));
    }

    #[test]
    fn syntax_errors_name_the_column() {
        assert_eq!(failure("1 + $"), "syntax error at column 5: unexpected character '$'");
        assert_eq!(
            failure("(1 + 2"),
            "syntax error at column 7: expected an operator or ')', found end of input"
        );
        assert_eq!(failure("1 + 2)"), "syntax error at column 6: unmatched ')'");
        assert_eq!(
            failure("2 3"),
            "syntax error at column 3: expected an operator or end of input, found number 3"
        );
        assert_eq!(
            failure("1 +"),
            "syntax error at column 4: expected a number, a name or '(', found end of input"
        );
        assert!(failure("foo(1)").starts_with("syntax error at column 1: unknown name 'foo'"));
        assert!(failure("2 * x").starts_with("syntax error at column 5: unknown name 'x'"));
        assert_eq!(
            failure("sqrt 4"),
            "syntax error at column 6: expected '(' after sqrt, found number 4"
        );
        assert_eq!(
            failure("sqrt(1, 2)"),
            "syntax error at column 1: sqrt takes 1 argument, found 2"
        );
        assert_eq!(
            failure("max()"),
            "syntax error at column 1: max takes at least 1 argument, found 0"
        );
        assert_eq!(
            failure("max(1 2)"),
            "syntax error at column 7: expected an operator, ',' or ')', found number 2"
        );
        assert!(failure("2e").starts_with("syntax error at column 2"));
        assert!(failure("1.2.3").starts_with("syntax error at column 4"));
    }

    #[test]
    fn syntax_errors_win_over_arithmetic_errors() {
        assert!(failure("1 / 0 +").starts_with("syntax error"));
    }

    #[test]
    fn division_by_zero() {
        assert_eq!(failure("1 / 0"), "division by zero");
        assert_eq!(failure("5 % (2 - 2)"), "division by zero");
        assert_eq!(failure("0 / 0"), "division by zero");
    }

    #[test]
    fn non_finite_results() {
        for expression in ["sqrt(-1)", "10 ^ 400", "exp(1000)", "ln(0)", "1e400", "(-8)^(1/3)"] {
            assert!(
                failure(expression).starts_with("the result is not a finite real number"),
                "{expression}"
            );
        }
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(value(&ok), 1.0);
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(failure(&deep).contains("nests deeper than 256 levels"));
        assert!(failure(&"-".repeat(100_000)).contains("nests deeper"));
        assert!(failure(&"2^".repeat(100_000)).contains("nests deeper"));
    }

    #[test]
    fn long_flat_chains_need_no_recursion() {
        let chain = vec!["1"; 100_000].join(" + ");
        assert_eq!(value(&chain), 100_000.0);
    }
}
