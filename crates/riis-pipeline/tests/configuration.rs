//! Module configuration sections: declared by a module, set at server, site
//! and location level, merged per location key by key, read per request; and
//! the build errors that point at the offending key.

mod common;

use std::sync::{Arc, OnceLock};

use common::*;
use riis_pipeline::{LocationDefinition, RequestNotification as N, Section, SectionSource};
use serde::Deserialize;

/// The test module's section.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Greeting {
    text: String,
    punctuation: String,
    limits: Limits,
}

/// A nested table, to see merging below the top level.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct Limits {
    low: i64,
    high: i64,
}

/// A section occurrence from TOML text.
fn source(name: &str, toml_text: &str, key: &str) -> SectionSource {
    SectionSource {
        name: name.to_owned(),
        value: toml::Value::Table(toml::from_str(toml_text).expect("valid test TOML")),
        key: key.to_owned(),
    }
}

/// A location with sections.
fn location(path: &str, index: usize, sections: Vec<SectionSource>) -> LocationDefinition {
    LocationDefinition {
        path: path.to_owned(),
        sections,
        key: format!("sites[0].locations[{index}]"),
        ..LocationDefinition::default()
    }
}

/// A pipeline whose `Greeter` module declares the `greeting` section and
/// answers every request with the value resolved for it.
fn greeter_pipeline() -> TestPipeline {
    greeter_pipeline_after(|_| {})
}

/// [`greeter_pipeline`], with the modules `before` registers listed first.
fn greeter_pipeline_after(before: impl FnOnce(&mut TestPipeline)) -> TestPipeline {
    let mut t = TestPipeline::new();
    before(&mut t);
    let handle: Arc<OnceLock<Section<Greeting>>> = Arc::default();
    let for_script = handle.clone();
    t.register("Greeter", move |_, reg, _| {
        let section = reg.declare_section::<Greeting>("greeting")?;
        handle.set(section).unwrap();
        let for_script = for_script.clone();
        reg.set_request_notifications(
            move || ScriptedModule::new(greet(for_script.clone())),
            N::ExecuteRequestHandler.into(),
            Default::default(),
        )
    });
    t.handler(catch_all(&["Greeter"]));
    t
}

/// The Greeter's script: writes `text punctuation low..high`.
fn greet(section: Arc<OnceLock<Section<Greeting>>>) -> Script {
    script(move |ctx, _| {
        let g = ctx.config(*section.get().expect("declared at registration"));
        let text = format!(
            "{}{} {}..{}",
            g.text, g.punctuation, g.limits.low, g.limits.high
        );
        write(ctx, text);
        Status::Continue
    })
}

#[tokio::test]
async fn sections_merge_from_server_to_site_to_location_key_by_key() {
    let mut t = greeter_pipeline();
    t.builder_mut().server_section(source(
        "greeting",
        "text = 'server'\npunctuation = '!'\n[limits]\nlow = 1\nhigh = 10",
        "greeting",
    ));
    let site = t.site_mut();
    site.sections
        .push(source("greeting", "text = 'site'", "sites[0].greeting"));
    site.locations.push(location(
        "/loc",
        0,
        vec![source(
            "greeting",
            "punctuation = '?'\n[limits]\nhigh = 20",
            "sites[0].locations[0].greeting",
        )],
    ));
    site.locations.push(location(
        "/loc/inner",
        1,
        vec![source(
            "greeting",
            "text = 'inner'",
            "sites[0].locations[1].greeting",
        )],
    ));
    let pipeline = t.build();

    assert_eq!(get(&pipeline, "/").await.body(), "site! 1..10");
    assert_eq!(get(&pipeline, "/loc").await.body(), "site? 1..20");
    assert_eq!(get(&pipeline, "/loc/page").await.body(), "site? 1..20");
    assert_eq!(
        get(&pipeline, "/loc/inner/page").await.body(),
        "inner? 1..20"
    );
    // A prefix match must end at a segment boundary.
    assert_eq!(get(&pipeline, "/location").await.body(), "site! 1..10");
}

#[tokio::test]
async fn an_unset_section_takes_the_types_defaults() {
    let pipeline = greeter_pipeline().build();

    assert_eq!(get(&pipeline, "/").await.body(), " 0..0");
    assert_eq!(
        pipeline.sections().collect::<Vec<_>>(),
        [("greeting", "Greeter")]
    );
}

#[test]
fn an_unknown_field_is_a_build_error_naming_the_full_key_path() {
    let mut t = greeter_pipeline();
    t.site_mut().locations.push(location(
        "/loc",
        0,
        vec![source(
            "greeting",
            "text = 'fine'\ncolour = 'red'",
            "sites[0].locations[0].greeting",
        )],
    ));

    let error = t.try_build().expect_err("colour is not a field");

    assert_eq!(error.key, "sites[0].locations[0].greeting.colour");
    assert!(error.message.contains("colour"), "{}", error.message);
}

#[test]
fn a_nested_type_error_names_the_nested_key() {
    let mut t = greeter_pipeline();
    t.site_mut().sections.push(source(
        "greeting",
        "[limits]\nhigh = 'lots'",
        "sites[0].greeting",
    ));

    let error = t.try_build().expect_err("high must be an integer");

    assert_eq!(error.key, "sites[0].greeting.limits.high");
}

/// A section whose keys are checked together: `low` at most `high`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Limits")]
struct Ordered;

impl TryFrom<Limits> for Ordered {
    type Error = String;

    fn try_from(limits: Limits) -> Result<Self, String> {
        if limits.low > limits.high {
            return Err(format!("low {} is above high {}", limits.low, limits.high));
        }
        Ok(Ordered)
    }
}

/// A pipeline whose module declares the `ordered` section.
fn ordered_pipeline() -> TestPipeline {
    let mut t = TestPipeline::new();
    t.register("Ordered", |_, reg, _| {
        reg.declare_section::<Ordered>("ordered")?;
        reg.set_request_notifications(
            || ScriptedModule::new(script(|_, _| Status::Continue)),
            N::BeginRequest.into(),
            Default::default(),
        )
    });
    t
}

#[test]
fn a_level_is_checked_on_what_it_inherits() {
    // The location's `high = -2` is wrong on its own (low defaults to 0)
    // and right on the server's `low = -5`.
    let mut t = ordered_pipeline();
    t.builder_mut()
        .server_section(source("ordered", "low = -5\nhigh = -1", "ordered"));
    t.site_mut().locations.push(location(
        "/loc",
        0,
        vec![source(
            "ordered",
            "high = -2",
            "sites[0].locations[0].ordered",
        )],
    ));
    assert!(t.try_build().is_ok());

    // An inner location is checked on the outer one's keys; the level that
    // breaks the rule is the one named.
    let mut t = ordered_pipeline();
    t.builder_mut()
        .server_section(source("ordered", "low = -5\nhigh = -1", "ordered"));
    t.site_mut().locations.push(location(
        "/outer/inner",
        0,
        vec![source(
            "ordered",
            "high = -4",
            "sites[0].locations[0].ordered",
        )],
    ));
    t.site_mut().locations.push(location(
        "/outer",
        1,
        vec![source(
            "ordered",
            "low = -3",
            "sites[0].locations[1].ordered",
        )],
    ));
    let error = t.try_build().expect_err("-3 is above -4");
    assert_eq!(error.key, "sites[0].locations[0].ordered");
    assert!(
        error.message.contains("low -3 is above high -4"),
        "{}",
        error.message
    );
}

#[test]
fn an_undeclared_section_is_a_build_error() {
    let mut t = greeter_pipeline();
    t.site_mut().sections.push(source(
        "nobody_declares_this",
        "x = 1",
        "sites[0].nobody_declares_this",
    ));

    let error = t.try_build().expect_err("no module declares the section");

    assert_eq!(error.key, "sites[0].nobody_declares_this");
    assert!(
        error.message.contains("nobody_declares_this"),
        "{}",
        error.message
    );
}

#[test]
fn a_section_declared_twice_fails_registration() {
    let mut builder = riis_pipeline::PipelineBuilder::new();
    builder
        .register_module("A", |_, reg, _| {
            reg.declare_section::<Greeting>("greeting").map(|_| ())
        })
        .unwrap();

    let error = builder
        .register_module("B", |_, reg, _| {
            reg.declare_section::<Greeting>("greeting").map(|_| ())
        })
        .expect_err("the name is taken");

    assert!(error.message.contains("greeting"), "{}", error.message);
    assert!(error.message.contains("module A"), "{}", error.message);
}

#[test]
fn a_section_shared_with_another_type_fails_registration() {
    #[derive(Deserialize)]
    struct Other {}
    for share_first in [false, true] {
        let mut builder = riis_pipeline::PipelineBuilder::new();
        let share = |reg: &mut riis_pipeline::ModuleRegistration<'_>| {
            reg.share_section::<Other>("greeting").map(|_| ())
        };
        let declare = |reg: &mut riis_pipeline::ModuleRegistration<'_>| {
            reg.declare_section::<Greeting>("greeting").map(|_| ())
        };
        let error = if share_first {
            builder
                .register_module("A", |_, reg, _| share(reg))
                .unwrap();
            builder.register_module("B", |_, reg, _| declare(reg))
        } else {
            builder
                .register_module("A", |_, reg, _| declare(reg))
                .unwrap();
            builder.register_module("B", |_, reg, _| share(reg))
        }
        .expect_err("another type");
        assert!(error.message.contains("greeting"), "{}", error.message);
        assert!(error.message.contains("module A"), "{}", error.message);
    }
}

/// A module that shares another's section reads the same resolved value,
/// whether it is listed before the owner or after it; the owner is the one
/// named for the section.
#[tokio::test]
async fn a_shared_section_reads_as_its_owners() {
    for sharer_first in [false, true] {
        let sharer = |_: u32, reg: &mut riis_pipeline::ModuleRegistration<'_>, _: &_| {
            let section = reg.share_section::<Greeting>("greeting")?;
            reg.set_request_notifications(
                move || {
                    ScriptedModule::new(script(move |ctx, _| {
                        let text = format!("shared {};", ctx.config(section).text);
                        write(ctx, text);
                        Status::Continue
                    }))
                },
                N::BeginRequest.into(),
                Default::default(),
            )
        };
        let mut t = if sharer_first {
            greeter_pipeline_after(|t| {
                t.register("Sharer", sharer);
            })
        } else {
            let mut t = greeter_pipeline();
            t.register("Sharer", sharer);
            t
        };
        t.site_mut()
            .sections
            .push(source("greeting", "text = 'site'", "sites[0].greeting"));
        let pipeline = t.build();

        assert_eq!(get(&pipeline, "/").await.body(), "shared site;site 0..0");
        assert_eq!(
            pipeline.sections().collect::<Vec<_>>(),
            [("greeting", "Greeter")]
        );
    }
}

/// Counts its terminations.
struct CountingFactory(Arc<std::sync::atomic::AtomicUsize>);

impl riis_pipeline::HttpModuleFactory for CountingFactory {
    fn get_http_module(
        &self,
    ) -> Result<Box<dyn riis_pipeline::HttpModule>, riis_pipeline::ModuleError> {
        Err(riis_pipeline::ModuleError::new("not used"))
    }
    fn terminate(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A module that registered is terminated when no pipeline comes of its
/// registration (a later module or the build failed), exactly once, and not
/// before a built pipeline's own end.
#[test]
fn registered_modules_are_terminated_when_the_build_fails() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let build = |handler_module: &str| {
        let terminated = Arc::new(AtomicUsize::new(0));
        let counter = terminated.clone();
        let mut builder = riis_pipeline::PipelineBuilder::new();
        builder
            .register_module("Counted", move |_, r, _| {
                r.set_request_notifications(
                    CountingFactory(counter.clone()),
                    N::ExecuteRequestHandler.into(),
                    riis_pipeline::RequestNotifications::NONE,
                )
            })
            .unwrap();
        builder.site(riis_pipeline::SiteDefinition {
            id: 1,
            name: "s".to_owned(),
            physical_root: std::env::temp_dir(),
            key: "sites[0]".to_owned(),
            handlers: Some(vec![riis_pipeline::HandlerDefinition {
                name: "h".to_owned(),
                path: "*".to_owned(),
                verbs: vec!["*".to_owned()],
                resource_type: "Unspecified".to_owned(),
                modules: vec![handler_module.to_owned()],
                allow_path_info: false,
                key: "handlers[0]".to_owned(),
            }]),
            ..riis_pipeline::SiteDefinition::default()
        });
        (builder.build(), terminated)
    };
    let (failed, terminated) = build("NoSuchModule");
    assert!(failed.is_err());
    assert_eq!(terminated.load(SeqCst), 1);

    let (built, terminated) = build("Counted");
    let pipeline = built.unwrap();
    assert_eq!(terminated.load(SeqCst), 0);
    pipeline.terminate();
    assert_eq!(terminated.load(SeqCst), 1);
}

/// `client_config` is the section of the location the client's URL falls
/// in, whatever a BeginRequest module rewrote it to; `config` follows the
/// rewrite. Without a rewrite the two are the same.
#[tokio::test]
async fn client_config_is_the_section_of_the_url_the_client_asked_for() {
    let mut t = TestPipeline::new();
    t.register("Rewriter", |_, reg, _| {
        reg.set_request_notifications(
            || {
                ScriptedModule::new(script(|ctx, _| {
                    if ctx.request().url() == "/loc/rewrite-me" {
                        ctx.request_mut().set_url("/other/page").unwrap();
                    }
                    Status::Continue
                }))
            },
            N::BeginRequest.into(),
            Default::default(),
        )
    });
    let handle: Arc<OnceLock<Section<Greeting>>> = Arc::default();
    let for_script = handle.clone();
    t.register("Greeter", move |_, reg, _| {
        handle
            .set(reg.declare_section::<Greeting>("greeting")?)
            .unwrap();
        let section = for_script.clone();
        reg.set_request_notifications(
            move || {
                let section = section.clone();
                ScriptedModule::new(script(move |ctx, call| {
                    if matches!(call, Call::AsyncCompletion { .. }) {
                        return Status::Continue;
                    }
                    let s = *section.get().unwrap();
                    let text = format!("{} {}", ctx.config(s).text, ctx.client_config(s).text);
                    write(ctx, text);
                    if ctx.child_depth() == 0 && ctx.request().url() == "/other/page" {
                        // A child request is judged by its own URL: its
                        // client location is its own, not the parent's.
                        write(ctx, " | child: ");
                        let mut child = ctx.clone_context().unwrap();
                        child.request_mut().set_url("/elsewhere").unwrap();
                        let flags = riis_pipeline::ExecuteFlags {
                            buffer_response: true,
                            ..Default::default()
                        };
                        ctx.execute_request(child, flags).unwrap();
                        return Status::Pending;
                    }
                    Status::Continue
                }))
            },
            N::ExecuteRequestHandler.into(),
            Default::default(),
        )
    });
    t.handler(catch_all(&["Greeter"]));
    let site = t.site_mut();
    site.sections
        .push(source("greeting", "text = 'site'", "sites[0].greeting"));
    for (i, (path, text)) in [("/loc", "loc"), ("/other", "other")]
        .into_iter()
        .enumerate()
    {
        site.locations.push(location(
            path,
            i,
            vec![source(
                "greeting",
                &format!("text = '{text}'"),
                &format!("sites[0].locations[{i}].greeting"),
            )],
        ));
    }
    let pipeline = t.build();
    assert_eq!(
        get(&pipeline, "/loc/rewrite-me").await.body(),
        "other loc | child: site site"
    );
    assert_eq!(get(&pipeline, "/loc/plain").await.body(), "loc loc");
    assert_eq!(
        get(&pipeline, "/other/page").await.body(),
        "other other | child: site site"
    );
    assert_eq!(get(&pipeline, "/").await.body(), "site site");
}

/// A location with `physical_path` (IIS's virtual directory, nginx's
/// `alias`): its URLs and those of the locations inside it map into its
/// folder, matched at segment boundaries; every other URL maps under the
/// site's root. MapPath modules start from that path.
#[tokio::test]
async fn virtual_directories_map_their_urls_into_their_folders() {
    let mut t = TestPipeline::new();
    t.register("Mapper", |_, reg, _| {
        reg.set_request_notifications(
            || {
                ScriptedModule::new(script(|ctx, _| {
                    let own = ctx.physical_path().display().to_string();
                    let directory = ctx.virtual_directory();
                    let directory = format!(
                        "{} -> {}",
                        directory.path,
                        directory.physical_path.display()
                    );
                    let mapped: Vec<String> = [
                        "/img/a/b.png",
                        "/img",
                        "/imgx/a",
                        "/img/thumbs/t.png",
                        // Mapped as a request's URL would be.
                        "//img/a",
                        "/imgx/../img/./q",
                        "/img/../../etc",
                    ]
                    .iter()
                    .map(|url| ctx.map_path(url).display().to_string())
                    .collect();
                    write(ctx, format!("{own}|{directory}|{}", mapped.join(",")));
                    Status::Continue
                }))
            },
            N::ExecuteRequestHandler.into(),
            Default::default(),
        )
    });
    t.handler(catch_all(&["Mapper"]));
    let site = t.site_mut();
    site.locations.push(LocationDefinition {
        path: "/img/".into(),
        physical_path: Some("/srv/pictures".into()),
        key: "sites[0].locations[0]".into(),
        ..LocationDefinition::default()
    });
    // Inside the virtual directory, without a folder of its own.
    site.locations.push(location("/img/thumbs", 1, Vec::new()));
    let pipeline = t.build();

    let others = "/srv/pictures/a/b.png,/srv/pictures,/site/imgx/a,/srv/pictures/thumbs/t.png,\
                  /srv/pictures/a,/srv/pictures/q,/site/etc";
    assert_eq!(
        get(&pipeline, "/img/x.png").await.body(),
        format!("/srv/pictures/x.png|/img -> /srv/pictures|{others}")
    );
    assert_eq!(
        get(&pipeline, "/img/thumbs/y.png").await.body(),
        format!("/srv/pictures/thumbs/y.png|/img -> /srv/pictures|{others}")
    );
    assert_eq!(
        get(&pipeline, "/imgx/z.png").await.body(),
        format!("/site/imgx/z.png|/ -> /site|{others}")
    );
}

/// `PATH_TRANSLATED` of a folder's URL ends with a separator, as IIS
/// gives it (`…\\pictures\\`), also for a virtual directory's own URL,
/// which maps to its folder's path as configured.
#[tokio::test]
async fn a_folder_translates_with_its_trailing_separator() {
    let mut t = TestPipeline::new();
    t.module(
        "Vars",
        Registration::events(N::ExecuteRequestHandler),
        script(|ctx, _| {
            ctx.physical_path();
            let translated = ctx.server_variable("PATH_TRANSLATED").unwrap();
            let translated = translated.into_owned();
            write(ctx, translated);
            Status::Continue
        }),
    );
    t.handler(catch_all(&["Vars"]));
    t.site_mut().locations.push(LocationDefinition {
        path: "/img".into(),
        physical_path: Some("/srv/pictures".into()),
        key: "sites[0].locations[0]".into(),
        ..LocationDefinition::default()
    });
    let pipeline = t.build();
    assert_eq!(get(&pipeline, "/img/").await.body(), "/srv/pictures/");
    assert_eq!(get(&pipeline, "/img/a/").await.body(), "/srv/pictures/a/");
    assert_eq!(
        get(&pipeline, "/img/a.png").await.body(),
        "/srv/pictures/a.png"
    );
    assert_eq!(get(&pipeline, "/").await.body(), "/site/");
}

#[test]
fn the_root_location_cannot_be_a_virtual_directory() {
    let mut t = greeter_pipeline();
    t.site_mut().locations.push(LocationDefinition {
        path: "/".into(),
        physical_path: Some("/srv/elsewhere".into()),
        key: "sites[0].locations[0]".into(),
        ..LocationDefinition::default()
    });
    let error = t.try_build().expect_err("`/` is the site's root");
    assert_eq!(error.key, "sites[0].locations[0].physical_path");
    assert!(error.message.contains("site's `root`"), "{}", error.message);
}

/// What a global module reads at ApplicationStart: the section as each of
/// the site's locations resolves it, the most specific first, the site's
/// root last.
#[test]
fn a_global_module_reads_every_locations_section_when_the_site_starts() {
    use riis_pipeline::{Application, GlobalModule, GlobalNotification, GlobalNotificationStatus};
    use std::sync::Mutex;

    struct Reader {
        section: Section<Greeting>,
        seen: Arc<Mutex<Vec<String>>>,
    }
    impl GlobalModule for Reader {
        fn on_global_application_start(&self, app: &Application<'_>) -> GlobalNotificationStatus {
            let texts = app.configs(self.section).map(|g| g.text.clone());
            self.seen.lock().unwrap().extend(texts);
            GlobalNotificationStatus::Continue
        }
    }

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut t = TestPipeline::new();
    let for_module = seen.clone();
    t.register("Reader", move |_, reg, _| {
        let section = reg.declare_section::<Greeting>("greeting")?;
        reg.set_global_notifications(
            Reader {
                section,
                seen: for_module.clone(),
            },
            GlobalNotification::ApplicationStart.into(),
        )
    });
    let site = t.site_mut();
    site.sections
        .push(source("greeting", "text = 'site'", "sites[0].greeting"));
    site.locations.push(location(
        "/loc",
        0,
        vec![source(
            "greeting",
            "text = 'loc'",
            "sites[0].locations[0].greeting",
        )],
    ));
    site.locations.push(location("/quiet", 1, Vec::new()));
    let pipeline = t.build();
    pipeline.raise_application_start();
    let mut texts = seen.lock().unwrap().clone();
    // The site's root comes last; the others by specificity.
    assert_eq!(texts.pop().as_deref(), Some("site"));
    texts.sort();
    assert_eq!(texts, ["loc", "site"]);
}

/// An inherited section: each level's `steps` run after those of the
/// levels around it, unless the level writes `clear = true`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Trail {
    steps: Vec<String>,
    clear: bool,
}

impl riis_pipeline::InheritedSection for Trail {
    fn inherit(&mut self, outer: &Self, written: &toml::Table) -> Result<(), String> {
        if !written.contains_key("steps") {
            // The merged value repeats the array some outer level wrote.
            self.steps.clone_from(&outer.steps);
            return Ok(());
        }
        if let Some(i) = self.steps.iter().position(|s| outer.steps.contains(s)) {
            return Err(riis_pipeline::error_at_key(
                &format!("steps[{i}]"),
                format!("step `{}` is inherited already", self.steps[i]),
            ));
        }
        if written.get("clear").and_then(toml::Value::as_bool) != Some(true) {
            let own = std::mem::take(&mut self.steps);
            self.steps = outer.steps.iter().cloned().chain(own).collect();
        }
        Ok(())
    }
}

/// A pipeline whose `Trailer` module answers with the `trail` section's
/// steps, joined by `>`.
fn trail_pipeline() -> TestPipeline {
    let mut t = TestPipeline::new();
    let handle: Arc<OnceLock<Section<Trail>>> = Arc::default();
    let for_script = handle.clone();
    t.register("Trailer", move |_, reg, _| {
        handle
            .set(reg.declare_inherited_section::<Trail>("trail")?)
            .unwrap();
        let section = for_script.clone();
        reg.set_request_notifications(
            move || {
                let section = section.clone();
                ScriptedModule::new(script(move |ctx, _| {
                    let steps = ctx.config(*section.get().unwrap()).steps.join(">");
                    write(ctx, steps);
                    Status::Continue
                }))
            },
            N::ExecuteRequestHandler.into(),
            Default::default(),
        )
    });
    t.handler(catch_all(&["Trailer"]));
    t
}

#[tokio::test]
async fn an_inherited_sections_levels_add_to_one_another() {
    let mut t = trail_pipeline();
    t.builder_mut()
        .server_section(source("trail", "steps = ['server']", "trail"));
    let site = t.site_mut();
    site.sections
        .push(source("trail", "steps = ['site']", "sites[0].trail"));
    site.locations.push(location(
        "/a",
        0,
        vec![source(
            "trail",
            "steps = ['a']",
            "sites[0].locations[0].trail",
        )],
    ));
    // Writes the section without `steps`: keeps what it inherits, once.
    site.locations.push(location(
        "/a/b",
        1,
        vec![source(
            "trail",
            "clear = false",
            "sites[0].locations[1].trail",
        )],
    ));
    site.locations.push(location(
        "/a/b/c",
        2,
        vec![source(
            "trail",
            "steps = ['c']",
            "sites[0].locations[2].trail",
        )],
    ));
    site.locations.push(location(
        "/fresh",
        3,
        vec![source(
            "trail",
            "steps = ['fresh']\nclear = true",
            "sites[0].locations[3].trail",
        )],
    ));
    // `clear` was written by the level above, not by this one.
    site.locations.push(location(
        "/fresh/more",
        4,
        vec![source(
            "trail",
            "steps = ['more']",
            "sites[0].locations[4].trail",
        )],
    ));
    let pipeline = t.build();

    assert_eq!(get(&pipeline, "/").await.body(), "server>site");
    assert_eq!(get(&pipeline, "/a/x").await.body(), "server>site>a");
    assert_eq!(get(&pipeline, "/a/b/x").await.body(), "server>site>a");
    assert_eq!(get(&pipeline, "/a/b/c/x").await.body(), "server>site>a>c");
    assert_eq!(get(&pipeline, "/fresh").await.body(), "fresh");
    assert_eq!(get(&pipeline, "/fresh/more/x").await.body(), "fresh>more");
}

#[test]
fn an_inherited_sections_error_names_the_key_of_its_level() {
    let mut t = trail_pipeline();
    t.site_mut()
        .sections
        .push(source("trail", "steps = ['one', 'two']", "sites[0].trail"));
    t.site_mut().locations.push(location(
        "/a",
        0,
        vec![source(
            "trail",
            "steps = ['three', 'two']",
            "sites[0].locations[0].trail",
        )],
    ));

    let error = t.try_build().expect_err("`two` is there twice");

    assert_eq!(error.key, "sites[0].locations[0].trail.steps[1]");
    assert!(
        error.message.contains("`two` is inherited"),
        "{}",
        error.message
    );
}
