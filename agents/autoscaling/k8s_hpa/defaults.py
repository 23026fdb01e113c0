"""API-server defaulting of an HPA spec (``pkg/apis/autoscaling/v2/defaults.go``).

Only ``spec.behavior`` and the default metric are filled in here; the controller's own
settings are in :mod:`agents.autoscaling.k8s_hpa.config`.
"""

from __future__ import annotations

from agents.autoscaling.k8s_hpa.api import HPABehavior, HPAScalingPolicy, HPAScalingRules


#: ``autoscaling.DefaultCPUUtilization``: the metric an HPA gets when it lists none.
DEFAULT_CPU_UTILIZATION_PERCENT = 80


#: ``defaultHPAScaleUpRules`` (pkg/apis/autoscaling/v2/defaults.go): no stabilisation, and per
#: 15 s the larger of +4 pods and +100%.
DEFAULT_SCALE_UP_RULES = HPAScalingRules(
    stabilization_window_seconds=0,
    select_policy="Max",
    policies=(HPAScalingPolicy("Pods", 4, 15), HPAScalingPolicy("Percent", 100, 15)),
)
#: ``defaultHPAScaleDownRules``: up to -100% per 15 s. Its window stays ``None`` on purpose: the
#: controller fills it from ``--horizontal-pod-autoscaler-downscale-stabilization`` (300 s).
DEFAULT_SCALE_DOWN_RULES = HPAScalingRules(
    stabilization_window_seconds=None,
    select_policy="Max",
    policies=(HPAScalingPolicy("Percent", 100, 15),),
)


def _copy_hpa_scaling_rules(source: HPAScalingRules | None, defaults: HPAScalingRules) -> HPAScalingRules:
    """Fill unset fields from defaults (``copyHPAScalingRules``, autoscaling/v2/defaults.go)."""
    if source is None:
        return defaults
    return HPAScalingRules(
        stabilization_window_seconds=(
            defaults.stabilization_window_seconds
            if source.stabilization_window_seconds is None
            else source.stabilization_window_seconds
        ),
        select_policy=defaults.select_policy if source.select_policy is None else source.select_policy,
        policies=defaults.policies if source.policies is None else source.policies,
        tolerance=defaults.tolerance if source.tolerance is None else source.tolerance,
    )


def generate_hpa_scale_up_rules(rules: HPAScalingRules | None) -> HPAScalingRules:
    """Scale-up rules with every unset field defaulted (``GenerateHPAScaleUpRules``).

    Args:
        rules: User rules, or ``None``.

    Returns:
        Fully populated rules.
    """
    return _copy_hpa_scaling_rules(rules, DEFAULT_SCALE_UP_RULES)


def generate_hpa_scale_down_rules(rules: HPAScalingRules | None) -> HPAScalingRules:
    """Scale-down rules with unset fields defaulted, except the window (``GenerateHPAScaleDownRules``).

    Args:
        rules: User rules, or ``None``.

    Returns:
        Populated rules; ``stabilization_window_seconds`` may stay ``None`` (see
        :data:`DEFAULT_SCALE_DOWN_RULES`).
    """
    return _copy_hpa_scaling_rules(rules, DEFAULT_SCALE_DOWN_RULES)


def set_defaults_behavior(behavior: HPABehavior | None) -> HPABehavior | None:
    """API-server defaulting of ``spec.behavior`` (``SetDefaults_HorizontalPodAutoscalerBehavior``).

    Only a non-nil behavior is filled in. An HPA created without ``behavior`` keeps ``nil``,
    and the controller then runs the older, behaviour-less normalisation
    (:func:`normalize_desired_replicas`), not the default policies.

    Args:
        behavior: User behavior, or ``None``.

    Returns:
        ``None``, or a behavior with both directions populated.
    """
    if behavior is None:
        return None
    return HPABehavior(
        scale_up=generate_hpa_scale_up_rules(behavior.scale_up),
        scale_down=generate_hpa_scale_down_rules(behavior.scale_down),
    )
