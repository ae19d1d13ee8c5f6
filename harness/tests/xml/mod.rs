//! A small tree over quick-xml's events for the tests that read back the XML the harness
//! writes (JUnit, SVG, the XHTML index): well-formedness is quick-xml's check.

use quick_xml::events::Event;
use quick_xml::Reader;

/// An XML element: its name, attributes and children, from quick-xml's events.
#[derive(Debug, Default)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<El>,
    pub text: String,
}

impl El {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    fn all<'a>(&'a self, name: &str, out: &mut Vec<&'a El>) {
        if self.name == name {
            out.push(self);
        }
        for c in &self.children {
            c.all(name, out);
        }
    }
    pub fn find(&self, name: &str) -> Vec<&El> {
        let mut v = Vec::new();
        self.all(name, &mut v);
        v
    }
}

/// Parses a whole XML document (well-formedness checked by quick-xml: matching end tags,
/// attributes, entities) into its root element.
pub fn parse_xml(doc: &str) -> El {
    let mut r = Reader::from_str(doc);
    r.config_mut().check_end_names = true;
    let mut stack: Vec<El> = vec![El::default()];
    let el = |e: &quick_xml::events::BytesStart| El {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        attrs: e
            .attributes()
            .map(|a| {
                let a = a.expect("well-formed attribute");
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect(),
        ..Default::default()
    };
    loop {
        match r.read_event().unwrap_or_else(|e| panic!("not well-formed at {}: {e}", r.buffer_position())) {
            Event::Start(e) => stack.push(el(&e)),
            Event::Empty(e) => stack.last_mut().unwrap().children.push(el(&e)),
            Event::End(_) => {
                let done = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(done);
            }
            Event::Text(t) => stack.last_mut().unwrap().text.push_str(&t.decode().unwrap()),
            Event::GeneralRef(g) => {
                // Character references (&#13;, &#x85;) as the writers emit for characters that
                // must not stand raw, then the five predefined entities.
                let c = match g.resolve_char_ref().unwrap_or_else(|e| panic!("bad reference: {e}")) {
                    Some(c) => c,
                    None => match String::from_utf8(g.to_vec()).unwrap().as_str() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => panic!("unknown entity &{other};"),
                    },
                };
                stack.last_mut().unwrap().text.push(c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements");
    let mut top = stack.pop().unwrap();
    assert_eq!(top.children.len(), 1, "one root element");
    top.children.pop().unwrap()
}
