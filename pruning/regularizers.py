"""Group lasso: a regulariser that drives whole units or input features to zero while training,
so that structured pruning then removes groups that are already (nearly) zero.

Yuan & Lin (2006) "Model selection and estimation in regression with grouped variables"; Wen et
al. (2016) "Learning structured sparsity in deep neural networks" used it for filters and
channels. The penalty is strength x sum over groups g of sqrt(|g|) x ||w_g||_2, the groups being
`pruning.criteria.groups` ("units" or "inputs"). Unlike L2 weight decay, its gradient does not
shrink with the weights, so a group the loss does not need goes all the way to (about) zero.
"""
import numbers
import warnings

import keras
from keras import ops

from pruning import criteria
from pruning.prune import retrace, select

_EPSILON = 1e-12  # inside the square root: the norm of an all-zero (pruned) group has a gradient


@keras.saving.register_keras_serializable(package="pruning")
class GroupLasso(keras.regularizers.Regularizer):
    """strength x sum_g sqrt(|g|) ||w_g||_2 over the groups of `structure`, plus `base` (the
    weight's own regulariser, such as L2 weight decay, which it keeps).

    >>> w = keras.ops.convert_to_tensor([[3., 0.], [4., 1.]])  # unit norms 5 and 1
    >>> round(float(GroupLasso(0.5, "units")(w)), 4)  # 0.5 x sqrt(2) x (5 + 1)
    4.2426
    """

    def __init__(self, strength, structure="units", base=None, layout=None):
        if not isinstance(strength, numbers.Real) or not strength >= 0:
            raise ValueError(f"strength must be a number >= 0, got {strength!r}")
        if structure not in criteria.STRUCTURES:
            raise ValueError(f"structure must be one of {criteria.STRUCTURES}, got "
                             f"{structure!r}")
        self.strength, self.structure = float(strength), structure
        self.base = keras.regularizers.get(base)
        # the weight's axes (pruning.registry's table); a list from get_config
        self.layout = criteria.Layout(*(tuple(f) if isinstance(f, list) else f for f in layout)) \
            if layout is not None else criteria.DENSE

    def __call__(self, w):
        order, shape = criteria.group_order(tuple(w.shape), self.structure, self.layout)
        grouped = ops.reshape(ops.transpose(w, order), shape)  # a column per group
        norms = ops.sqrt(ops.sum(ops.square(grouped), axis=0) + _EPSILON)
        loss = self.strength * grouped.shape[0] ** 0.5 * ops.sum(norms)
        return loss + self.base(w) if self.base is not None else loss

    def get_config(self):
        return {"strength": self.strength, "structure": self.structure,
                "base": keras.regularizers.serialize(self.base) if self.base else None,
                "layout": [list(self.layout.outputs), list(self.layout.inputs),
                           self.layout.gates]}


def add_group_lasso(model, strength, structure="units", layers=None):
    """Give the prunable weights `layers` chooses (see `prune_low_magnitude`; default all) a
    `GroupLasso` penalty, on top of their own regulariser; returns their keys. The next `fit`
    adds it to the loss (the train step is retraced). Call it again to change the strength.

    Example:
      pruning.add_group_lasso(model, 1e-4, "units", layers=["fc1", "fc2"])
      model.fit(x, y)                                          # whole units go to about zero
      pruning.prune_low_magnitude(model, "threshold", 1e-3, pattern="units")
    """
    chosen, unsaved = select(model, layers), []
    for weight in chosen:
        variable = weight.variable
        base = variable.regularizer
        if isinstance(base, GroupLasso):
            base = base.base
        variable.regularizer = GroupLasso(strength, structure, base, weight.layout)
        # The layer argument that saves it in the layer's config: Keras names each weight's
        # regulariser argument as its constraint's (kernel_, depthwise_, recurrent_, ...).
        argument = (weight.constraint_attribute or "").replace("_constraint", "_regularizer")
        if weight.in_config and hasattr(weight.layer, argument):
            setattr(weight.layer, argument, variable.regularizer)
        else:
            unsaved.append(weight.key)
    if unsaved:
        warnings.warn(f"pruning.add_group_lasso: keras.models.load_model and clone_model rebuild "
                      f"{unsaved} from their owner's arguments, without the penalty: after "
                      f"loading, call add_group_lasso again", stacklevel=2)
    retrace(model)
    return [w.key for w in chosen]
