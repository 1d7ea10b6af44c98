"""The core's parts, composed and wired by `onduty.manager.Manager`: signals into incidents
(`incidents`), incidents into actions (`actions`, with `verdicts` and `undo`), sharing the state,
the active configuration (`setup`) and the emitter of decisions (`base`). Pure, like the rest of
the core."""
