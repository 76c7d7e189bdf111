"""Drift of served contexts against a model's held-out contexts, with the article / client as the unit.

The inference service receives contexts ``(n, ctx, D)`` of unit vectors. They have drifted when they no
longer look like the contexts of the snapshot the model was trained on. The windows of one article (or of
one client reading one article) overlap: consecutive windows share ctx - 1 of their vectors. Counting them
as independent rows makes *any* new article look like drift (a row-level classifier learns the article,
and sees its twin windows on the other side of every fold). So every test here works on **groups**: a
dataset window's group is its article, a served context's group its client session (client key; see
:func:`group_served` for requests without one). The two tests:

- :func:`domain_classifier_test`: a logistic regression tries to tell reference rows from current rows,
  cross-validated with whole groups held out (``StratifiedGroupKFold``). Its AUC over groups (a group's
  score: the mean held-out score of its windows) is the effect size: 0.5 means it cannot tell a session
  from a reference article, 1.0 every session is recognisable; the Mann-Whitney test of the same
  comparison, groups as units, gives its p-value.
- :func:`mmd_permutation_test`: the MMD² between the groups' kernel mean embeddings, a U-statistic over
  groups, for a linear kernel (mean shifts) and RBF kernels at 0.5, 1 and 2 times the median distance
  (spread, several modes), the largest of them on its own null's scale; its p-value comes from
  permutations of whole groups between the two sides: exact when groups are exchangeable, whatever the
  correlation inside a group.

:func:`drift_report` decides: **drift** when the AUC > ``threshold_auc`` (large: most sessions are
recognisable) **and** the MMD p-value < ``alpha`` (not a chance draw of articles: with a few groups the
AUC alone swings past the threshold, and the permutation p-value is exact, so new articles of the
reference's snapshot alert with probability at most ``alpha``); **insufficient data** when either side
has fewer than ``min_groups`` groups (no verdict, no alert); **no drift** otherwise. The classifier's own
Mann-Whitney p-value is reported, not used: cross-validation makes the group scores slightly dependent,
and on real articles it falls below 0.05 about twice as often as it should. Each side is capped at
``max_groups`` groups and ``max_per_group`` windows per group, so a check costs about a second whatever
the traffic.

The modules: ``features`` (rows and groups), ``classifier`` (the domain classifier), ``mmd`` (the MMD
test), ``report`` (:func:`drift_report`, ``DriftReport``), ``samples`` (loading grouped samples from a
dataset folder or from the service's window files). Pure functions over numpy arrays (numpy, scipy,
scikit-learn); no Prefect here: see ``tasks/drift.py``.
"""
