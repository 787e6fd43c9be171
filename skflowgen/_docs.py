"""The docstring parts both estimators share: their common parameters and attributes.

Each estimator fills the ``%(...)s`` slots with its own defaults and the evidence behind
them, as citations of benchmarks/RESULTS.md sections; no figure is copied here.
"""

from ._auto import _IMAGE_BATCH_SIZE, _IMAGE_PRIOR_COMPONENTS, _IMAGE_ROWS_SEEN, _TABLE_SCORE
from ._sampling import _WIDENINGS

PRIOR_COMPONENTS_DOC = f"""\
    n_prior_components : int or 'auto', default='auto'
        Components of the density of the codes that :meth:`sample` draws latents from.
        ``'auto'``: {_IMAGE_PRIOR_COMPONENTS} with ``image_shape``, 1 on tables. 1:
        ``flow_``, the prior trained with the model (the paper). More: a Gaussian mixture
        with full covariances fitted by EM (:class:`~sklearn.mixture.GaussianMixture`) to
        the codes of the rows the model keeps (``transform``; every row given to ``fit`` up
        to 10,000), at the first :meth:`sample` after a fit, each member's components
        widened by the factor, from {_WIDENINGS[0]} to {_WIDENINGS[-1]}, whose decoded draws
        the member's encoder sees most like the training rows (the Frechet distance of its
        last hidden layer): a decoder that drops detail draws rows that vary less than the
        data, the more so the blurrier, and a wider mixture makes up for it. Codes
        form a cluster per kind of row, which one Gaussian pushed through a flow cannot
        separate without mass between them, where ``sample`` then draws blends; a flow with
        a mixture base (FlowGMM, Izmailov et al. 2020) refitted to the codes drew no closer
        to the data than the mixture alone. Inference, the codes and every score keep
        ``flow_``, so this moves ``sample`` alone, and a change of it on a fitted model
        needs no refit.
        %(evidence)s"""

COMMON_PARAMETERS_DOC = """\
    feature_scaling : {'robust', 'standard'} or None, default='robust'
        Units the networks see: each feature centred and divided by a spread learned in
        ``fit``. ``'robust'``: the median and the 5-95 percentile range (the full range where
        that is 0, 1 for a constant feature), so that a feature whose bulk is packed in a
        corner of its range (a heavy tail, or rare anomalies, stretched by ``MinMaxScaler``)
        still carries weight, and its tail shows as large values; ``'standard'``: mean and
        standard deviation; None: the data as given. Outputs stay in the data's units:
        ``score_samples`` is ``log p(x)`` of the unscaled row (the log-Jacobian
        ``-sum_j log s_j`` of the observed entries added), ``inverse_transform``, ``sample``
        and ``impute`` map back. A fixed ``sigma`` (LFP) is in the scaled units. Ignored with
        ``image_shape`` (a convolution shares its weights across pixels, which then keep one
        common scale) and with ``reconstruction='bce'`` (GLF), which needs the data in
        [0, 1]. On the ADBench sets the default ranked anomalies better than None for both
        estimators (benchmarks/RESULTS.md, "Feature scaling and ensembles").
    covariance_type : {'diag', 'spherical'}, default=%(covariance_type)r
        Observation noise ``N(x; g(z), diag(sigma^2))`` fitted by maximum
        likelihood: one variance per feature (``'diag'``, nonlinear factor
        analysis: features the model reconstructs well weigh more), or one
        shared variance (``'spherical'``, the papers' ``sigma^2 I``: no feature
        can be written off as noise, nor dominate the likelihood from a variance
        driven to its floor).
        %(covariance_type_evidence)s
""" + f"""\
    score_method : {{'auto', 'fused', 'local', 'local_features', 'marginal', 'joint', \
'knn', 'lof'}}, default='auto'
        What :meth:`score_samples`, :meth:`decision_function` and :meth:`predict` rank
        rows by; ``skflowgen.scores`` says what each estimates and when to choose it.
        ``'marginal'``: an importance-sampled ``log p(x)``; ``'joint'``: the papers' log
        joint ``log p(x, z~)`` at the inferred latent ``z~``; ``'knn'`` and ``'lof'``: the
        local density of ``z~`` among the codes of the rows the model keeps; ``'fused'``:
        the mean of ``'knn'`` and the reconstruction term ``log p(x | z~)``, each
        standardised over the kept rows (a row off the learned manifold or in a sparse
        part of it scores low); ``'local'``: the mean of ``'lof'`` and the log-density of
        ``z~`` by its nearest kept code, standardised alike; ``'local_features'``: the mean
        of ``'local'``'s two scores of ``z~`` and the same two of the encoder's last feature
        maps (its last hidden layer on tables), standardised alike, which keeps those maps
        of the kept rows (channels x height x width floats a row and member: 3,136 on
        28 x 28 images). ``'auto'``:
        ``'%(image_score)s'`` with ``image_shape``, ``'{_TABLE_SCORE}'`` on tables.
        :meth:`score` (model selection) uses the marginal whatever this says.
        %(score_method_evidence)s
""" + """\
    n_importance_samples : int, default=%(n_importance_samples)r
        Importance draws per row of the ``'marginal'`` score and of :meth:`score`:
        ``log p(x)`` is the log of the mean of ``p(x, z_i) / q(z_i)`` over them. Its
        cost grows with the draws (a decoder and flow pass each) and its variance
        shrinks. %(n_importance_samples_evidence)s
    contamination : float in (0, 0.5], default=0.1
        Expected fraction of outliers: ``offset_`` is the ``100 * contamination``
        percentile of the scores of the rows given to ``fit`` (``novelty=False``) or of
        rows held out of training (``novelty=True``); with ``support_fraction=None`` it
        also sets which rows each training step learns from.
    novelty : bool, default=False
        What ``predict`` is calibrated for, with the meaning of
        :class:`~sklearn.neighbors.LocalOutlierFactor`'s. False: to flag
        ``contamination`` of the rows given to ``fit`` (:meth:`fit_predict`; every row
        trains, unless ``early_stopping`` holds some out);
        ``predict`` on new rows is available, but may flag more than ``contamination``
        of new normal rows, which can score lower than the rows trained on. True: to flag
        about ``contamination`` of *new* rows: ``validation_fraction`` of the rows are
        held out of training and set ``offset_``; ``fit_predict`` is then unavailable.
        Choose True to score new data later with ``predict``; the ranking of
        ``score_samples`` is the same kind either way (benchmarks/RESULTS.md, "predict on
        new rows", measures both). Set before ``fit``: a fitted model refuses a change.
    support_fraction : float in (0, 1] or None, default=%(support_fraction)r
        Trimmed maximum likelihood: each training step minimises the mean loss
        (negative log-likelihood) of the ``support_fraction`` share of its batch
        that the model finds most likely, so that rows it cannot explain, the
        likely anomalies of an unlabeled training set, are not learned as normal
        (the deep counterpart of :class:`~sklearn.covariance.MinCovDet`; GLF's
        autoencoder and flow keep their rows by their own losses, the
        reconstruction error and the NLL of the code). None uses
        ``1 - contamination``; 1 trains on every row. %(support_fraction_evidence)s
    n_estimators : int, default=%(n_estimators)r
        Members of an ensemble trained together: the same networks with different initial
        weights (and their own Langevin noise), evaluated at once along a leading member
        dimension of every layer (one batched matrix product, not a loop over models).
        ``score_samples`` is the mean of the members' scores (the log of the geometric
        mean of their densities), which averages out the seed-to-seed spread of a deep
        detector; ``transform`` concatenates the members' latents, ``inverse_transform``
        averages the members' decodings of such a concatenation, and ``sample`` draws
        each row from a member chosen at random (the members' mixture).
        %(n_estimators_evidence)s
""" + f"""\
    max_iter : int or 'auto', default='auto'
        Epochs of training (the most, with a ``tol``). ``'auto'``: %(table_max_iter)s on
        tables; with ``image_shape`` at least %(image_min_epochs)s and enough to train on
        {_IMAGE_ROWS_SEEN:,} images in all (epochs times the rows an epoch trains on: 167
        on 300 images). A short budget suits tables because it ranks anomalies best: early
        on a model has learned the bulk of the data and not yet its rare rows (the
        inlier-memorisation effect), while the held-out likelihood keeps improving long
        after the ranking peaks.
        %(max_iter_evidence)s
        Images want more: after 10 epochs of load_digits the networks are still blurred,
        after 40 both estimators drew samples ahead of scikit-learn's tuned generators and
        their local scores ranked the held-out digits higher; on 8,000 Fashion-MNIST
        images (one seed) 10, 20 and 40 epochs drew validation FD 50, 37 and 28 (GLF) and
        82, 51 and 42 (LFP), for about four times the fit at 40 (benchmarks/DEFAULTS.md,
        "Generating"). %(image_epochs_evidence)s
        Raise it (10 or more) for sampling, imputation and model selection by
        :meth:`score`.
""" + f"""\
    batch_size : int or 'auto', default='auto'
        Rows per training mini-batch. ``'auto'`` trains on
        ``min(256, max(16, n_samples // 10))`` rows, so that even a small table
        gets ten or more steps per epoch, and with ``image_shape`` on
        {_IMAGE_BATCH_SIZE}: a convolutional network learns from its steps, and on
        the CPU a small batch costs little more per image: on Fashion-MNIST's 10,000
        images, 16 rows (625 steps an epoch, against 40 at the 250 rows of the rule
        for tables) drew samples far nearer the data for about the same fit time
        (benchmarks/DEFAULTS.md, "Generating").
        Evaluation (scoring, ``transform``, ``sample``...) streams over chunks sized
        by memory instead: about 64 MiB of network activations each, whatever the
        number of rows. In ``partial_fit``, whose rows are a part of data of unknown
        size, ``'auto'`` is its value on large data (256 on tables), and a call's
        rows are cut into as many batches as that size needs, of about equal size.
""" + """\
    tol : float or None, default=None
        Minimum improvement of the training loss (GLF: of its reconstruction
        error; with ``early_stopping``: of the validation score) that resets
        the ``n_iter_no_change`` count, or None: no convergence test, training runs
        exactly ``max_iter`` epochs (a fixed budget, as with the ``tol=None`` of
        :class:`~sklearn.linear_model.SGDOneClassSVM`) and ends without a
        ``ConvergenceWarning``; with ``early_stopping``, the best epoch's weights
        are kept. With a float, a fit that reaches ``max_iter`` first warns.
    n_iter_no_change : int, default=10
        Epochs without a ``tol`` improvement before training stops.
    early_stopping : bool, default=False
        Stop when the mean log-likelihood of the held-out rows stops improving and
        keep the best weights. The log-likelihood is %(likelihood_score)r, whatever
        ``score_method`` says: the local scores (and ``'fused'``) need the training
        rows' codes, which exist only once training ends.
    validation_fraction : float in (0, 1), default=0.2
        Fraction of the rows (at most 4,096) held out of training where something needs
        them: ``novelty=True`` (``offset_`` is the ``100 * contamination`` percentile of
        their scores, the scores new rows get) and ``early_stopping`` (its validation
        rows); otherwise every row trains. With ``novelty=True`` the share of new rows ``predict`` flags
        strays from ``contamination`` by about ``sqrt(c (1 - c) / n_held)`` with
        ``c = contamination``; where it rounds to no row, ``offset_`` comes from the
        training rows. With ``warm_start`` on the same rows, keep an int
        ``random_state``: the same rows are held out again.
    warm_start : bool, default=False
        Continue from the fitted networks and optimizer state on the next fit
        (``partial_fit`` always continues a fitted model).
    verbose : int, default=0
        0 is silent; 1 shows a fit's progress: after each epoch the mean loss and its terms
        by name, per row (GLF: the reconstruction error and the flow's NLL of the codes,
        which train separate networks, so that the NLL may grow while the autoencoder
        spreads its codes; LFP: ``-log p(x | z)`` and ``-log p(z)`` at the inferred
        latents), the time spent and an estimate of the time left: a progress bar where
        ``tqdm`` is installed (the ``progress`` extra), a line an epoch otherwise.
    random_state : int, RandomState instance or None, default=None
        Seeds private :class:`torch.Generator` objects for initialisation,
        shuffling, Langevin noise and importance sampling. Torch's global RNG
        is never used. A fitted model scores deterministically either way; its
        importance draws and ``sample`` draws come from a CPU generator, so that
        it gives the same numbers on the CPU and on a GPU, up to rounding.
    n_jobs : int or None, default=None
        torch's intra-op threads in every call (``fit``, scoring, ``transform``,
        ``sample``...), torch's own setting restored after it: None is 1, -1 every core
        (:func:`joblib.cpu_count`), -2 all but one. The networks are small:
        on two idle cores a second thread saved little or nothing in ``fit``, and beside a
        busy process it cost several times the time of one (benchmarks/RESULTS.md,
        "Threads"); raise it on an idle machine with many cores.
    device : str, default='auto'
        ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
        Resolved at every call, so ``set_params(device='cpu')`` works on a
        fitted model; a missing CUDA gives a warning and the CPU."""

COMMON_ATTRIBUTES_DOC = """\
    n_components_ : int
        Latent dimension used (of each member).
    flow_ : CouplingFlow
        The latent prior of every member; ``flow_.log_prob(z)`` of latents
        ``(n_estimators, n, n_components_)`` is the per-row log-density of each.
    noise_variance_ : ndarray of shape (n_estimators, n_features_in_)
        Observation noise variances ``sigma_j^2`` of ``N(x; g(z), diag(sigma^2))`` in the
        data's units, one row per member (a single row for one member: the shape does not
        depend on ``n_estimators``).
    offset_ : float
        ``score_samples`` percentile at ``100 * contamination`` over the rows given to
        ``fit`` (``novelty=False``) or held out of training (``novelty=True``; with
        ``partial_fit``, bounded samples of the rows seen), for the current parameters:
        after ``set_params`` of one that moves a score, recomputed at first use, from
        the 10,000 rows kept where ``fit`` had more (``skflowgen.outlier``).
    n_samples_seen_ : int
        Rows given to ``fit``, or to every ``partial_fit`` call since the first.
    n_iter_ : int
        Epochs run (completed epochs, if the fit was interrupted); each
        ``partial_fit`` call adds one.
    loss_curve_ : list of float
        Mean training loss per epoch (per ``partial_fit`` call).
    validation_scores_ : list of float or None
        Mean held-out log-likelihood per epoch with ``early_stopping``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` has string column names."""
