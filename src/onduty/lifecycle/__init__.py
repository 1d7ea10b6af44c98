"""The core's two lifecycles, composed by `onduty.manager.Manager`: signals into incidents, and
incidents into actions. Pure, like the rest of the core."""
