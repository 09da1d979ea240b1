//! Command-line spellings of library enums. The library types know nothing of clap; their
//! `ValueEnum` implementations live here, beside the flags that use them.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::data::prepare::Compat;
use crate::detect::Guidance;
use crate::sink::MapsMode;
use crate::sql::Format;

/// `impl ValueEnum for $ty` from `variant => "name", "help"` lines.
macro_rules! value_enum {
    ($ty:ty { $($variant:path => $name:literal, $help:literal;)* }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),*]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $($variant => PossibleValue::new($name).help($help),)*
                })
            }
        }
    };
}

value_enum!(Format {
    Format::Table => "table", "an aligned table with a header, for reading";
    Format::Csv => "csv", "CSV with a header line; NULL is an empty field (nested columns need json)";
    Format::Json => "json", "one JSON array of row objects; NULL is null";
});

value_enum!(Guidance {
    Guidance::Fused => "fused", "PromptAD: visual memory and prompts, fused";
    Guidance::VisionOnly => "vision-only", "ablation: the visual memory alone";
    Guidance::PromptOnly => "prompt-only", "ablation: the prompts alone";
});

value_enum!(MapsMode {
    MapsMode::Compact => "compact", "the patch grid each map is rebuilt from (about 1 KB per image)";
    MapsMode::Full => "full", "the grid and the u16 map itself (about 257 KB per image at 400×400)";
    MapsMode::None => "none", "no map rows: scores and statistics only";
});

value_enum!(Compat {
    Compat::Rgb => "rgb", "RGB for shots and test images alike";
    Compat::Official => "official", "test images in BGR, as the official test loop feeds them";
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_spelling_that_parses_back() {
        fn round_trip<T: ValueEnum + PartialEq + std::fmt::Debug>() {
            for v in T::value_variants() {
                let name = v.to_possible_value().unwrap().get_name().to_string();
                assert_eq!(&T::from_str(&name, false).unwrap(), v, "{name}");
            }
        }
        round_trip::<Format>();
        round_trip::<Guidance>();
        round_trip::<Compat>();
        round_trip::<MapsMode>();
        // The spellings of Guidance, Compat and MapsMode are also their serde names (in artifacts,
        // specs and run plans).
        assert_eq!(serde_json::to_string(&Guidance::VisionOnly).unwrap(), "\"vision-only\"");
        assert_eq!(serde_json::to_string(&Compat::Official).unwrap(), "\"official\"");
        for mode in MapsMode::value_variants() {
            let name = mode.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(serde_json::to_string(mode).unwrap(), format!("\"{name}\""));
            assert_eq!(mode.name(), name);
        }
    }
}

/// `--format` of the commands whose output is a report rather than rows: a table to read, or
/// JSON for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ReportFormat {
    /// For reading.
    #[default]
    #[value(alias = "text")]
    Table,
    /// For programs.
    Json,
}

impl ReportFormat {
    /// The format, given the deprecated `--json` flag (kept, hidden, for one release).
    pub fn or_json(self, json: bool) -> Self {
        if json {
            ReportFormat::Json
        } else {
            self
        }
    }
}
